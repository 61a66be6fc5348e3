//! Parsing of the /proc files the engine reads. Parsers are pure functions over text and are unit
//! tested; the thin readers around them only open files.
use crate::Error;
use nix::unistd::Pid;

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    /// Path, `[heap]`, `[stack]`, `[vdso]`, ... or empty for anonymous memory.
    pub name: String,
}

impl MapEntry {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// Kernel areas that are moved, not copied, or (vsyscall) left alone.
    pub fn is_special(&self) -> bool {
        matches!(self.name.as_str(), "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
    }
    /// A mapping of a file (as opposed to anonymous, heap, stack or special memory).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }
}

/// Parses /proc/PID/maps text.
pub fn parse_maps(text: &str) -> Result<Vec<MapEntry>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let range = it.next().ok_or("empty line")?;
        let perms = it.next().ok_or("no perms")?;
        let offset = it.next().ok_or("no offset")?;
        let _dev = it.next().ok_or("no dev")?;
        let inode = it.next().ok_or("no inode")?;
        let name = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range.split_once('-').ok_or("bad range")?;
        let p = perms.as_bytes();
        if p.len() < 4 {
            return Err(format!("bad perms {perms}"));
        }
        out.push(MapEntry {
            start: u64::from_str_radix(s, 16).map_err(|e| e.to_string())?,
            end: u64::from_str_radix(e, 16).map_err(|e| e.to_string())?,
            read: p[0] == b'r',
            write: p[1] == b'w',
            exec: p[2] == b'x',
            shared: p[3] == b's',
            offset: u64::from_str_radix(offset, 16).map_err(|e| e.to_string())?,
            inode: inode.parse().map_err(|e: std::num::ParseIntError| e.to_string())?,
            name,
        });
    }
    Ok(out)
}

fn read(pid: Pid, file: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path).map_err(|e| Error::Proc { path, source: e })
}

pub fn maps(pid: Pid) -> Result<Vec<MapEntry>, Error> {
    let path = format!("/proc/{pid}/maps");
    parse_maps(&read(pid, "maps")?).map_err(|d| Error::Proc { path, source: std::io::Error::other(d) })
}

/// Fields of /proc/PID/stat after the command name, numbered as in proc(5) (field 3 = state).
pub fn parse_stat(text: &str) -> Result<Vec<String>, String> {
    let close = text.rfind(')').ok_or("no ')' in stat")?;
    let mut v = vec![String::new(), String::new(), String::new()];
    v.extend(text[close + 2..].split_whitespace().map(str::to_string));
    Ok(v)
}

pub fn stat(pid: Pid) -> Result<Vec<String>, Error> {
    let path = format!("/proc/{pid}/stat");
    parse_stat(&read(pid, "stat")?).map_err(|d| Error::Proc { path, source: std::io::Error::other(d) })
}

/// mm fields from /proc/PID/stat (fields 26-28 and 45-51 of proc(5)); brk is read separately.
pub fn mm_fields(stat: &[String]) -> Result<mos_proto::migration::MmFields, String> {
    let f = |i: usize| -> Result<u64, String> {
        stat.get(i).ok_or(format!("stat has no field {i}"))?.parse::<u64>().map_err(|e| format!("stat field {i}: {e}"))
    };
    Ok(mos_proto::migration::MmFields {
        start_code: f(26)?,
        end_code: f(27)?,
        start_stack: f(28)?,
        start_data: f(45)?,
        end_data: f(46)?,
        start_brk: f(47)?,
        brk: 0,
        arg_start: f(48)?,
        arg_end: f(49)?,
        env_start: f(50)?,
        env_end: f(51)?,
    })
}

/// Selected /proc/PID/status fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub threads: u32,
    pub uid: u32,
    pub gid: u32,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    /// Blocked signals.
    pub sig_blk: u64,
    /// Signals pending for the thread and for the whole process.
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub state: char,
}

pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        let first = || v.split_whitespace().next().unwrap_or("0");
        match k {
            "Threads" => s.threads = v.parse().unwrap_or(0),
            "Uid" => s.uid = first().parse().unwrap_or(0),
            "Gid" => s.gid = first().parse().unwrap_or(0),
            "SigIgn" => s.sig_ign = u64::from_str_radix(v, 16).unwrap_or(0),
            "SigCgt" => s.sig_cgt = u64::from_str_radix(v, 16).unwrap_or(0),
            "SigBlk" => s.sig_blk = u64::from_str_radix(v, 16).unwrap_or(0),
            "SigPnd" => s.sig_pnd = u64::from_str_radix(v, 16).unwrap_or(0),
            "ShdPnd" => s.shd_pnd = u64::from_str_radix(v, 16).unwrap_or(0),
            "State" => s.state = v.chars().next().unwrap_or('?'),
            _ => {}
        }
    }
    s
}

pub fn status(pid: Pid) -> Result<Status, Error> {
    Ok(parse_status(&read(pid, "status")?))
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped by its parent).
pub fn ended(pid: Pid) -> bool {
    status(pid).map_or(true, |s| matches!(s.state, 'Z' | 'X'))
}

pub fn comm(pid: Pid) -> Result<String, Error> {
    Ok(read(pid, "comm")?.trim_end_matches('\n').to_string())
}

pub fn cmdline(pid: Pid) -> Result<String, Error> {
    let path = format!("/proc/{pid}/cmdline");
    let raw = std::fs::read(&path).map_err(|e| Error::Proc { path, source: e })?;
    let parts: Vec<String> = raw.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    Ok(parts.join(" "))
}

pub fn personality(pid: Pid) -> Result<u32, Error> {
    let t = read(pid, "personality")?;
    let path = format!("/proc/{pid}/personality");
    u32::from_str_radix(t.trim(), 16).map_err(|e| Error::Proc { path, source: std::io::Error::other(e) })
}

pub fn auxv(pid: Pid) -> Result<Vec<u8>, Error> {
    let path = format!("/proc/{pid}/auxv");
    std::fs::read(&path).map_err(|e| Error::Proc { path, source: e })
}

pub fn exe(pid: Pid) -> Result<String, Error> {
    let path = format!("/proc/{pid}/exe");
    let p = std::fs::read_link(&path).map_err(|e| Error::Proc { path, source: e })?;
    Ok(p.to_string_lossy().into_owned())
}

/// Number of tasks (threads) of the process.
pub fn task_count(pid: Pid) -> Result<usize, Error> {
    let path = format!("/proc/{pid}/task");
    Ok(std::fs::read_dir(&path).map_err(|e| Error::Proc { path, source: e })?.count())
}

/// CPU time (utime + stime) in clock ticks, from /proc/PID/stat fields 14 and 15.
pub fn cpu_ticks(pid: Pid) -> Result<(u64, u64), Error> {
    let s = stat(pid)?;
    let f = |i: usize| s.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((f(14), f(15)))
}

/// A /proc/PID/pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo(pub u64);

impl PageInfo {
    pub fn present(self) -> bool {
        self.0 & (1 << 63) != 0
    }
    pub fn swapped(self) -> bool {
        self.0 & (1 << 62) != 0
    }
    /// The page is a page-cache page or shared anonymous memory (not a private copy).
    pub fn file_or_shared(self) -> bool {
        self.0 & (1 << 61) != 0
    }
    /// The page holds data the process may have written or read: it must be considered for sending.
    pub fn populated(self) -> bool {
        self.present() || self.swapped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let t = "55d0c4a00000-55d0c4a01000 r--p 00000000 fe:01 1234                       /usr/bin/cat\n\
                 7ffd1a2b0000-7ffd1a2d1000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f0000000000-7f0000001000 rw-s 00000000 00:01 99 /dev/zero (deleted)\n\
                 7f0000002000-7f0000003000 ---p 00000000 00:00 0 \n";
        let m = parse_maps(t).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "/usr/bin/cat");
        assert!(m[0].is_file() && m[0].read && !m[0].write);
        assert_eq!(m[1].name, "[stack]");
        assert!(!m[1].is_file());
        assert!(m[2].shared && m[2].write);
        assert_eq!(m[3].name, "");
        assert!(parse_maps("zz").is_err());
    }

    #[test]
    fn stat_fields_are_numbered_as_in_proc5() {
        let mut t = String::from("42 (a (b) c) S");
        for i in 4..=52 {
            t.push_str(&format!(" {i}"));
        }
        let s = parse_stat(&t).unwrap();
        assert_eq!(s[3], "S");
        assert_eq!(s[14], "14");
        let mm = mm_fields(&s).unwrap();
        assert_eq!((mm.start_code, mm.start_stack, mm.start_data, mm.env_end), (26, 28, 45, 51));
    }

    #[test]
    fn status_fields() {
        let s = parse_status(
            "State:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\nThreads:\t3\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000002\n",
        );
        assert_eq!((s.threads, s.uid, s.sig_ign, s.sig_cgt, s.state), (3, 1000, 0x1000, 2, 'S'));
    }
}
