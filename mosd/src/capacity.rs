//! The machine a node stands for: the CPU quota and memory limit of its cgroups, the memory it
//! uses of that limit, and how many of its tasks want a CPU.
//!
//! A node is a whole machine or a slice of one (a container, a systemd unit with `CPUQuota=` or
//! `MemoryMax=`, a test-bench virtual node). A slice's capacity is that of its cgroups, in
//! cgroup v1 (`cpu.cfs_quota_us`/`cpu.cfs_period_us`, `memory.limit_in_bytes`) or v2 (`cpu.max`,
//! `memory.max`), whichever hierarchy holds the controller; a hybrid host mounts both. A limit
//! set on an ancestor cgroup applies too, so the tightest one on the way up is the node's.
//!
//! Parsing is pure (functions of text, unit-tested with fixtures); the I/O functions read /proc
//! and the cgroup files and never fail: what cannot be read counts as "no limit".
//!
//! Measured here (Linux 6.18, cgroup v1, quota 0.5 CPU, 4 busy loops, 2 CPUs): a throttled task
//! is in state R in /proc/TID/stat every time one looks (1,600 of 1,600 samples), while
//! `procs_running` of /proc/stat leaves throttled tasks out (it read 1, the sampler alone, in 69 %
//! of 2,000 samples). So in a node with a CPU quota, [`runnable`] counts the R tasks of its
//! cgroup: that is the demand, which `procs_running` does not see.

use std::path::{Path, PathBuf};

/// The cgroup directories this process belongs to (None = not found / root of the hierarchy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cgroups {
    pub v1_cpu: Option<PathBuf>,
    pub v1_memory: Option<PathBuf>,
    pub v2: Option<PathBuf>,
}

/// Capacity limits of the node: CPU quota as a fraction of CPUs (quota/period, None =
/// unlimited), memory limit in bytes (None = unlimited or absurdly large like v1's
/// 9223372036854771712).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub cpu_fraction: Option<f64>,
    pub mem_limit: Option<u64>,
}

/// Memory limits at or above this (1 EiB) mean "unlimited": v1 writes its "no limit" as
/// 9223372036854771712.
pub const UNLIMITED_MEMORY: u64 = 1 << 60;

impl Cgroups {
    /// The cgroups of this process.
    pub fn of_self() -> Cgroups {
        Cgroups::read("self")
    }

    /// The cgroups of process `pid`, as seen from this process's mounts.
    #[cfg(test)]
    pub fn of_pid(pid: u32) -> Cgroups {
        Cgroups::read(&pid.to_string())
    }

    fn read(proc_dir: &str) -> Cgroups {
        let (Ok(member), Ok(mounts)) =
            (std::fs::read_to_string(format!("/proc/{proc_dir}/cgroup")), std::fs::read_to_string("/proc/self/mountinfo"))
        else {
            return Cgroups::default();
        };
        let cg = resolve(&parse_proc_cgroup(&member), &parse_mountinfo(&mounts));
        Cgroups {
            v1_cpu: cg.v1_cpu.filter(|d| !is_v1_root(d)),
            v1_memory: cg.v1_memory.filter(|d| !is_v1_root(d)),
            v2: cg.v2.filter(|d| !is_v2_root(d)),
        }
    }
}

/// Only the top cgroup of a v1 hierarchy has `release_agent` (also in a cgroup namespace, where
/// the namespace's top shows as "/" but is not the hierarchy's root).
fn is_v1_root(dir: &Path) -> bool {
    dir.join("release_agent").exists()
}

/// Every v2 cgroup but the root has `cgroup.type`.
fn is_v2_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// Capacity limits of the node: the tightest CPU quota and memory limit of its cgroups and their
/// ancestors.
pub fn limits(cg: &Cgroups) -> Limits {
    Limits { cpu_fraction: cpu_quota(cg).map(|b| b.value), mem_limit: mem_limit(cg).map(|b| b.value) }
}

/// Memory used by the cgroup that sets the node's memory limit: v1 `memory.usage_in_bytes` minus
/// `total_inactive_file` of `memory.stat`, v2 `memory.current` minus `inactive_file` (inactive
/// page cache is reclaimed before the limit bites). None if no memory limit applies.
pub fn mem_used(cg: &Cgroups) -> Option<u64> {
    let b = mem_limit(cg)?;
    let stat = std::fs::read_to_string(b.dir.join("memory.stat")).unwrap_or_default();
    let (used, inactive) = if b.v2 {
        (read_u64(&b.dir.join("memory.current"))?, stat_value(&stat, "inactive_file"))
    } else {
        let inactive = stat_value(&stat, "total_inactive_file").or_else(|| stat_value(&stat, "inactive_file"));
        (read_u64(&b.dir.join("memory.usage_in_bytes"))?, inactive)
    };
    Some(used.saturating_sub(inactive.unwrap_or(0)))
}

/// Runnable tasks (state R in /proc/TID/task/TID/stat) among the tasks of the node's CPU cgroup
/// (the one whose quota binds, with its descendants; v1 `tasks`, v2 `cgroup.threads`), not
/// counting the thread ids in `exclude`.
///
/// None when no CPU quota applies: the node then has the whole machine's CPUs and the caller
/// uses /proc/stat `procs_running`. (Being in a non-root cgroup is not enough: on a systemd host
/// every daemon is, in its service's cgroup, without a quota.)
pub fn runnable(cg: &Cgroups, exclude: &[u32]) -> Option<u32> {
    let b = cpu_quota(cg)?;
    let list = if b.v2 { "cgroup.threads" } else { "tasks" };
    let mut n = 0;
    for dir in subtree(&b.dir) {
        let text = std::fs::read_to_string(dir.join(list)).unwrap_or_default();
        for tid in parse_ids(&text).filter(|t| !exclude.contains(t)) {
            let stat = std::fs::read_to_string(format!("/proc/{tid}/task/{tid}/stat")).unwrap_or_default();
            n += u32::from(task_state(&stat) == Some('R'));
        }
    }
    Some(n)
}

/// Effective node shape: (ncpus, speed) for a machine of `host_ncpus` CPUs at `host_speed`, given
/// a quota: ncpus = ceil(fraction) clamped to [1, host_ncpus], speed = host_speed ×
/// min(fraction, host_ncpus) / ncpus. No quota (or a nonsensical one): the host's shape.
pub fn shape(host_ncpus: u16, host_speed: u32, cpu_fraction: Option<f64>) -> (u16, u32) {
    let host = host_ncpus.max(1);
    let Some(f) = cpu_fraction.filter(|f| f.is_finite() && *f > 0.0) else {
        return (host, host_speed);
    };
    // `as` saturates: a huge fraction becomes u64::MAX, then the clamp.
    let ncpus = (f.ceil() as u64).clamp(1, u64::from(host)) as u16;
    let speed = (f64::from(host_speed) * f.min(f64::from(host)) / f64::from(ncpus)).round() as u32;
    // A sliver of a CPU is slow, not stopped: speed 0 would divide loads by zero.
    (ncpus, if host_speed > 0 { speed.max(1) } else { 0 })
}

// ---------------------------------------------------------------------------------------------
// The binding limit, found by walking up the cgroup tree (I/O)

/// A limit and the cgroup directory that sets it.
#[derive(Debug, Clone, PartialEq)]
struct Bound<T> {
    dir: PathBuf,
    v2: bool,
    value: T,
}

/// `dir` and its ancestors, as long as they hold `marker` (a file every cgroup of the hierarchy
/// has): stops at the top of the mounted hierarchy.
fn up<'a>(dir: &'a Option<PathBuf>, marker: &'static str) -> impl Iterator<Item = &'a Path> {
    dir.iter().flat_map(move |d| d.ancestors().take_while(move |a| a.join(marker).exists()))
}

fn read_text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read_text(p)?.trim().parse().ok()
}

/// The tightest CPU quota, as a fraction of CPUs.
fn cpu_quota(cg: &Cgroups) -> Option<Bound<f64>> {
    let v1 = up(&cg.v1_cpu, "cpu.cfs_quota_us").filter_map(|d| {
        let value = v1_cpu_fraction(&read_text(&d.join("cpu.cfs_quota_us"))?, &read_text(&d.join("cpu.cfs_period_us"))?)?;
        Some(Bound { dir: d.to_path_buf(), v2: false, value })
    });
    let v2 = up(&cg.v2, "cgroup.controllers").filter_map(|d| {
        let value = v2_cpu_fraction(&read_text(&d.join("cpu.max"))?)?;
        Some(Bound { dir: d.to_path_buf(), v2: true, value })
    });
    v1.chain(v2).min_by(|a, b| a.value.total_cmp(&b.value))
}

/// The tightest memory limit, in bytes.
fn mem_limit(cg: &Cgroups) -> Option<Bound<u64>> {
    let v1 = up(&cg.v1_memory, "memory.limit_in_bytes").filter_map(|d| {
        Some(Bound { dir: d.to_path_buf(), v2: false, value: memory_limit(&read_text(&d.join("memory.limit_in_bytes"))?)? })
    });
    let v2 = up(&cg.v2, "cgroup.controllers")
        .filter_map(|d| Some(Bound { dir: d.to_path_buf(), v2: true, value: memory_limit(&read_text(&d.join("memory.max"))?)? }));
    v1.chain(v2).min_by_key(|b| b.value)
}

/// `dir` and every cgroup below it.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            out.extend(rd.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pure parsing

/// One line of /proc/PID/cgroup: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    /// The v2 line (`0::/path`).
    v2: bool,
    controllers: Vec<String>,
    path: String,
}

fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            Some(Membership {
                v2: id == "0" && ctrl.is_empty(),
                controllers: ctrl.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// A cgroup filesystem mount, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// The cgroup shown at the mount point (`/` unless a subtree was mounted or bind-mounted).
    root: String,
    mount_point: PathBuf,
    v2: bool,
    /// v1: the super options, which name the controllers (`rw,cpu,cpuacct`).
    options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let (fstype, _source, opts) = (right.next()?, right.next()?, right.next().unwrap_or(""));
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                v2,
                options: opts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The directory of cgroup `path` under `m`, if `m` shows it.
fn dir_under(m: &CgroupMount, path: &str) -> Option<PathBuf> {
    // A cgroup outside this process's cgroup namespace shows as `/../..`: not reachable.
    if path.split('/').any(|c| c == "..") || !path.starts_with('/') {
        return None;
    }
    let rel = if m.root == "/" {
        path
    } else if path == m.root {
        ""
    } else {
        // `/docker/abc/x` is under `/docker/abc`, `/docker/abcdef` is not.
        path.strip_prefix(m.root.as_str()).filter(|rest| rest.starts_with('/'))?
    };
    Some(m.mount_point.join(rel.trim_start_matches('/')))
}

/// Maps the memberships to directories through the mounts (roots not filtered out yet).
fn resolve(member: &[Membership], mounts: &[CgroupMount]) -> Cgroups {
    let v1 = |ctrl: &str| {
        let m = member.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))?;
        mounts.iter().filter(|mt| !mt.v2 && mt.options.iter().any(|o| o == ctrl)).find_map(|mt| dir_under(mt, &m.path))
    };
    let v2 = member.iter().find(|m| m.v2).and_then(|m| mounts.iter().filter(|mt| mt.v2).find_map(|mt| dir_under(mt, &m.path)));
    Cgroups { v1_cpu: v1("cpu"), v1_memory: v1("memory"), v2 }
}

/// v1 quota and period files: the fraction of CPUs, None when unlimited (quota -1).
fn v1_cpu_fraction(quota: &str, period: &str) -> Option<f64> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: u64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"): the fraction of CPUs, None when unlimited.
fn v2_cpu_fraction(cpu_max: &str) -> Option<f64> {
    let mut f = cpu_max.split_whitespace();
    let q: u64 = f.next()?.parse().ok()?;
    let p: u64 = f.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// A memory limit file (v1 bytes, v2 bytes or "max"): None when unlimited.
fn memory_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|v| *v < UNLIMITED_MEMORY)
}

/// The value of `key` in a `memory.stat` ("key value" lines).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Ids listed one per line (`tasks`, `cgroup.threads`, `cgroup.procs`).
fn parse_ids(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines().filter_map(|l| l.trim().parse().ok())
}

/// The state letter of a /proc/.../stat line (the field after the command name, which may itself
/// hold spaces and parentheses).
fn task_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: v1 with cpu and memory, v2 mounted without controllers, and a memory cgroup
    /// set by whoever started us.
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/51ae\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A Debian 12 host with systemd: pure v2.
    const V2_CGROUP: &str = "0::/system.slice/mosd.service\n";
    const V2_MOUNTS: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
26 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 26 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// An older distribution: cpu and cpuacct mounted together, a container's subtree
    /// bind-mounted as the hierarchy top, a mount point with a space.
    const OLD_CGROUP: &str = "5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc/inner\n1:name=systemd:/docker/abc\n";
    const OLD_MOUNTS: &str = "\
100 99 0:40 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
101 99 0:41 /docker/abc /sys/fs/cgroup/my\\040memory ro,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup(OLD_CGROUP);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], Membership { v2: false, controllers: vec!["cpu".into(), "cpuacct".into()], path: "/docker/abc/inner".into() });
        let v2 = parse_proc_cgroup(V2_CGROUP);
        assert_eq!(v2, vec![Membership { v2: true, controllers: vec![], path: "/system.slice/mosd.service".into() }]);
        // A path may hold colons.
        assert_eq!(parse_proc_cgroup("0::/a:b\n")[0].path, "/a:b");
    }

    #[test]
    fn mountinfo_keeps_cgroup_mounts_only() {
        let m = parse_mountinfo(V2_MOUNTS);
        assert_eq!(m.len(), 1);
        assert!(m[0].v2);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup"));
        let m = parse_mountinfo(HYBRID_MOUNTS);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].options, vec!["rw", "cpu"]);
        assert!(m[4].v2);
        assert_eq!(parse_mountinfo(OLD_MOUNTS)[1].mount_point, Path::new("/sys/fs/cgroup/my memory"));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("a\\040b\\011c"), "a b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\\\x"), "\\\\x");
    }

    #[test]
    fn resolves_hybrid() {
        let cg = resolve(&parse_proc_cgroup(HYBRID_CGROUP), &parse_mountinfo(HYBRID_MOUNTS));
        assert_eq!(cg.v1_cpu.as_deref(), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(cg.v1_memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory/process_api/51ae")));
        assert_eq!(cg.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn resolves_pure_v2() {
        let cg = resolve(&parse_proc_cgroup(V2_CGROUP), &parse_mountinfo(V2_MOUNTS));
        assert_eq!(cg, Cgroups { v1_cpu: None, v1_memory: None, v2: Some(PathBuf::from("/sys/fs/cgroup/system.slice/mosd.service")) });
    }

    #[test]
    fn resolves_through_a_mount_root() {
        let cg = resolve(&parse_proc_cgroup(OLD_CGROUP), &parse_mountinfo(OLD_MOUNTS));
        assert_eq!(cg.v1_cpu.as_deref(), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/inner")));
        assert_eq!(cg.v1_memory.as_deref(), Some(Path::new("/sys/fs/cgroup/my memory")));
        assert_eq!(cg.v2, None);
    }

    #[test]
    fn paths_outside_the_mount_are_not_visible() {
        let m = CgroupMount { root: "/docker/abc".into(), mount_point: "/cg".into(), v2: true, options: vec![] };
        assert_eq!(dir_under(&m, "/docker/abcdef"), None);
        assert_eq!(dir_under(&m, "/other"), None);
        assert_eq!(dir_under(&m, "/docker/abc/x/y"), Some(PathBuf::from("/cg/x/y")));
        let top = CgroupMount { root: "/".into(), ..m };
        assert_eq!(dir_under(&top, "/../../elsewhere"), None);
        assert_eq!(dir_under(&top, "/"), Some(PathBuf::from("/cg")));
    }

    #[test]
    fn cpu_quota_files() {
        assert_eq!(v1_cpu_fraction("-1\n", "100000\n"), None);
        assert_eq!(v1_cpu_fraction("50000\n", "100000\n"), Some(0.5));
        assert_eq!(v1_cpu_fraction("150000", "100000"), Some(1.5));
        assert_eq!(v1_cpu_fraction("50000", "0"), None);
        assert_eq!(v1_cpu_fraction("junk", "100000"), None);
        assert_eq!(v2_cpu_fraction("max 100000\n"), None);
        assert_eq!(v2_cpu_fraction("25000 100000\n"), Some(0.25));
        assert_eq!(v2_cpu_fraction("200000 50000"), Some(4.0));
        assert_eq!(v2_cpu_fraction(""), None);
    }

    #[test]
    fn memory_limit_files() {
        assert_eq!(memory_limit("9223372036854771712\n"), None);
        assert_eq!(memory_limit("max\n"), None);
        assert_eq!(memory_limit("67108864\n"), Some(64 << 20));
        assert_eq!(memory_limit(""), None);
    }

    #[test]
    fn memory_stat_values() {
        let v1 = "cache 4096\nrss 8192\ninactive_file 100\ntotal_inactive_file 300\n";
        assert_eq!(stat_value(v1, "inactive_file"), Some(100));
        assert_eq!(stat_value(v1, "total_inactive_file"), Some(300));
        assert_eq!(stat_value(v1, "rss"), Some(8192));
        assert_eq!(stat_value(v1, "inactive"), None);
    }

    #[test]
    fn task_states() {
        assert_eq!(task_state("42 (busy) R 1 42 42 0 -1"), Some('R'));
        assert_eq!(task_state("43 (a) S (b)) S 1 2"), Some('S'));
        assert_eq!(task_state("44 (x y) D 1"), Some('D'));
        assert_eq!(task_state("garbage"), None);
        assert_eq!(parse_ids("12\n13\n\nx\n").collect::<Vec<_>>(), vec![12, 13]);
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(2, 1000, None), (2, 1000));
        assert_eq!(shape(2, 1000, Some(0.5)), (1, 500));
        assert_eq!(shape(2, 1000, Some(1.0)), (1, 1000));
        assert_eq!(shape(2, 1000, Some(1.5)), (2, 750));
        assert_eq!(shape(2, 1000, Some(4.0)), (2, 1000));
        assert_eq!(shape(8, 3000, Some(2.5)), (3, 2500));
        assert_eq!(shape(2, 1000, Some(1e-9)), (1, 1));
        assert_eq!(shape(2, 1000, Some(f64::NAN)), (2, 1000));
        assert_eq!(shape(2, 1000, Some(0.0)), (2, 1000));
        assert_eq!(shape(0, 1000, Some(1e300)), (1, 1000));
    }

    /// A scratch directory tree standing for a cgroup hierarchy, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let d = std::env::temp_dir().join(format!("mosd-capacity-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("scratch dir");
            Tree(d)
        }
        fn put(&self, rel: &str, file: &str, text: &str) -> PathBuf {
            let d = self.0.join(rel);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join(file), text).expect("write");
            d
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn own_tid() -> u32 {
        let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("tid")
    }

    #[test]
    fn v1_tree_tightest_ancestor_binds() {
        let t = Tree::new("v1");
        // cpu: unlimited at the top, 1.5 CPUs on `a`, 0.5 on `a/b` where we are.
        for (rel, q) in [("cpu", "-1"), ("cpu/a", "150000"), ("cpu/a/b", "50000")] {
            t.put(rel, "cpu.cfs_quota_us", q);
            t.put(rel, "cpu.cfs_period_us", "100000");
        }
        // memory: 64 MiB on `m`, 1 GiB below it; `m` uses 10 MiB of which 2 MiB inactive cache.
        t.put("mem", "memory.limit_in_bytes", "9223372036854771712");
        let m = t.put("mem/m", "memory.limit_in_bytes", "67108864");
        t.put("mem/m", "memory.usage_in_bytes", "10485760");
        t.put("mem/m", "memory.stat", "inactive_file 0\ntotal_inactive_file 2097152\n");
        t.put("mem/m/n", "memory.limit_in_bytes", "1073741824");
        let cg = Cgroups { v1_cpu: Some(t.0.join("cpu/a/b")), v1_memory: Some(t.0.join("mem/m/n")), v2: None };
        assert_eq!(limits(&cg), Limits { cpu_fraction: Some(0.5), mem_limit: Some(64 << 20) });
        assert_eq!(mem_limit(&cg).map(|b| b.dir), Some(m));
        assert_eq!(mem_used(&cg), Some(8 << 20));

        // Runnable: the binding cgroup `a/b` and below; this thread is running while it reads.
        let me = own_tid();
        let (tx, rx) = std::sync::mpsc::channel();
        let (wake, wait) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tx.send(own_tid()).expect("send tid");
            let _ = wait.recv();
        });
        let s = rx.recv().expect("sleeper tid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{s}/task/{s}/stat")).ok().and_then(|st| task_state(&st)) != Some('S') {
            assert!(std::time::Instant::now() < deadline, "the sleeper thread never slept");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        t.put("cpu/a/b/child", "tasks", &format!("{s}\n"));
        t.put("cpu/a/b", "tasks", &format!("{me}\n"));
        // Not counted: `a` itself is above the binding cgroup.
        t.put("cpu/a", "tasks", &format!("{me}\n"));
        assert_eq!(runnable(&cg, &[]), Some(1));
        assert_eq!(runnable(&cg, &[me]), Some(0));
        drop(wake);
        sleeper.join().expect("sleeper");
    }

    #[test]
    fn v2_tree() {
        let t = Tree::new("v2");
        t.put("", "cgroup.controllers", "cpu memory");
        let s = t.put("slice", "cgroup.controllers", "cpu memory");
        t.put("slice", "cpu.max", "max 100000\n");
        t.put("slice", "memory.max", "536870912\n");
        t.put("slice", "memory.current", "300000000\n");
        t.put("slice", "memory.stat", "anon 1\ninactive_file 100000000\n");
        let leaf = t.put("slice/unit", "cgroup.controllers", "");
        t.put("slice/unit", "cpu.max", "150000 100000\n");
        t.put("slice/unit", "memory.max", "max\n");
        let cg = Cgroups { v1_cpu: None, v1_memory: None, v2: Some(leaf.clone()) };
        assert_eq!(limits(&cg), Limits { cpu_fraction: Some(1.5), mem_limit: Some(512 << 20) });
        assert_eq!(cpu_quota(&cg).map(|b| (b.dir, b.v2)), Some((leaf, true)));
        assert_eq!(mem_limit(&cg).map(|b| b.dir), Some(s));
        assert_eq!(mem_used(&cg), Some(200_000_000));
        t.put("slice/unit", "cgroup.threads", &format!("{}\n", own_tid()));
        assert_eq!(runnable(&cg, &[]), Some(1));
    }

    #[test]
    fn no_limits_no_numbers() {
        let t = Tree::new("none");
        t.put("cpu", "cpu.cfs_quota_us", "-1");
        t.put("cpu", "cpu.cfs_period_us", "100000");
        t.put("v2", "cgroup.controllers", "");
        let cg = Cgroups { v1_cpu: Some(t.0.join("cpu")), v1_memory: None, v2: Some(t.0.join("v2")) };
        assert_eq!(limits(&cg), Limits::default());
        assert_eq!(mem_used(&cg), None);
        assert_eq!(runnable(&cg, &[]), None);
        assert_eq!(limits(&Cgroups::default()), Limits::default());
    }

    #[test]
    fn own_cgroups_are_readable() {
        // Whatever this machine is, reading our own cgroups must not fail, and a directory found
        // must exist.
        let cg = Cgroups::of_self();
        for d in [&cg.v1_cpu, &cg.v1_memory, &cg.v2].into_iter().flatten() {
            assert!(d.is_dir(), "{} is not a directory", d.display());
        }
        assert_eq!(Cgroups::of_pid(std::process::id()), cg);
        let _ = limits(&cg);
    }
}
