//! The checkpoint file: the migration stream written to a file, with what a file needs besides.
//!
//! ```text
//! CheckpointHeader   (kind 20) postcard Header: format, when, where, who, command line, cwd
//! Offer              (kind 1)  the migration Offer (program, uid, CPU/vDSO identity, mapped files)
//! FileTable          (kind 21) postcard FileTable: the open descriptors, reopened at recovery
//! Vmas               (kind 4)  the memory map (mapped files by reference, checked at recovery)
//! Pages*             (kind 5)  raw page runs, as in a migration
//! Context            (kind 6)  registers, xstate, signals, mm fields ...
//! CheckpointEnd      (kind 22) raw: u64 LE byte count of everything before this frame,
//!                              then the SHA-256 of those bytes (40 bytes)
//! ```
//! Recovery reads the whole file through [`verify`] before it uses a byte of it: a truncated file
//! has no valid trailer, a corrupted one a different digest; both are refused with a clear error.
use crate::frame::{self, FrameError, Header as FrameHeader, Kind, HEADER_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

/// Version of the file layout above (the frames inside carry the protocol version).
pub const FORMAT: u32 = 1;
/// Body length of the `CheckpointEnd` frame.
pub const END_BODY: usize = 8 + 32;
/// Bytes of the whole `CheckpointEnd` frame.
pub const END_LEN: usize = HEADER_LEN + END_BODY;

/// First frame of a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// When the checkpoint was taken, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Node number of the home node that took it.
    pub node: u32,
    /// Pid of the process when it was checkpointed (a recovered process gets a new one).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The command line it was started with.
    pub command: Vec<String>,
    /// Its working directory (it returns there at recovery).
    pub cwd: String,
    /// Its file-creation mask.
    pub umask: u32,
}

/// What an open descriptor refers to, and how recovery gets it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdTarget {
    /// A regular file, reopened by path with its flags and set to its offset.
    File { path: String, size: u64 },
    /// A directory, reopened by path.
    Dir { path: String },
    /// A device other than a terminal (`/dev/null`, `/dev/zero`, `/dev/urandom` ...), reopened by path.
    Device { path: String },
    /// The same open file as mosrun's own descriptor `of` (0, 1 or 2) when the checkpoint was taken:
    /// a terminal, a pipe or a socket to whoever ran mosrun. Bound to the recovering mosrun's `of`.
    Stdio { of: u8, what: String },
    /// A terminal that is not mosrun's: bound to the recovering mosrun's stdin (read-only) or its
    /// stdout/stderr.
    Tty { path: String },
}

/// One open descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    pub fd: u32,
    /// Open flags as in /proc/PID/fdinfo (`O_ACCMODE`, `O_APPEND`, `O_NONBLOCK`, `O_CLOEXEC` ...).
    pub flags: u32,
    /// File offset.
    pub offset: u64,
    pub target: FdTarget,
}

/// The open descriptors of the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTable {
    pub fds: Vec<FdEntry>,
}

/// Why a file is not an intact checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("not a MOS checkpoint file (it does not start with a checkpoint header frame)")]
    NotCheckpoint,
    #[error(
        "truncated: the file ends at byte {len} without a valid end frame (an interrupted copy or write?); refusing to recover from it"
    )]
    Truncated { len: u64 },
    #[error("corrupted: its end frame covers {claimed} bytes but {actual} precede it; refusing to recover from it")]
    Length { claimed: u64, actual: u64 },
    #[error("corrupted: the SHA-256 of its {len} bytes does not match its end frame; refusing to recover from it")]
    Digest { len: u64 },
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
}

/// A writer that hashes and counts every byte it passes on.
pub struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hash: Sha256::new(), count: 0 }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the `CheckpointEnd` frame over everything written so far and returns the inner writer.
    pub fn finish(mut self) -> Result<(W, u64), FrameError> {
        let digest = self.hash.finalize_reset();
        let n = self.count;
        frame::write_raw(&mut self.inner, Kind::CheckpointEnd, &[&n.to_le_bytes(), &digest])?;
        self.inner.flush()?;
        Ok((self.inner, n + END_LEN as u64))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends the `CheckpointEnd` frame to a checkpoint written without one (all of `f` from its
/// start, read back and hashed) and returns the file's total length. Lets a writer keep hashing out
/// of the time the process is frozen: the bytes are read back from the page cache afterwards.
pub fn seal<F: Read + Write + Seek>(f: &mut F) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(buf.len());
        f.read_exact(&mut buf[..want])?;
        hash.update(&buf[..want]);
        done += want as u64;
    }
    let mut end = Vec::with_capacity(END_LEN);
    end.extend_from_slice(&FrameHeader::encode(Kind::CheckpointEnd, END_BODY as u32));
    end.extend_from_slice(&len.to_le_bytes());
    end.extend_from_slice(&hash.finalize());
    f.write_all(&end)?;
    f.flush()?;
    Ok(len + END_LEN as u64)
}

/// Checks a whole checkpoint of `len` bytes read from `r`: its first frame is a checkpoint header,
/// and its last frame is a `CheckpointEnd` whose length and SHA-256 match the bytes before it.
pub fn verify<R: Read>(r: &mut R, len: u64) -> Result<(), CheckError> {
    if len < (HEADER_LEN + END_LEN) as u64 {
        let mut head = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 || r.read_exact(&mut head).is_err() || !is_header(&head) {
            return Err(CheckError::NotCheckpoint);
        }
        return Err(CheckError::Truncated { len });
    }
    let body = len - END_LEN as u64;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    while done < body {
        let want = ((body - done) as usize).min(buf.len());
        r.read_exact(&mut buf[..want])?;
        if done == 0 && (want < HEADER_LEN || !is_header(buf[..HEADER_LEN].try_into().expect("16 bytes"))) {
            return Err(CheckError::NotCheckpoint);
        }
        hash.update(&buf[..want]);
        done += want as u64;
    }
    let mut end = [0u8; END_LEN];
    r.read_exact(&mut end)?;
    let h = FrameHeader::decode(end[..HEADER_LEN].try_into().expect("16 bytes"));
    match h {
        Ok(h) if h.kind == Kind::CheckpointEnd && h.len as usize == END_BODY => {}
        _ => return Err(CheckError::Truncated { len }),
    }
    let claimed = u64::from_le_bytes(end[HEADER_LEN..HEADER_LEN + 8].try_into().expect("8 bytes"));
    if claimed != body {
        return Err(CheckError::Length { claimed, actual: body });
    }
    if hash.finalize().as_slice() != &end[HEADER_LEN + 8..] {
        return Err(CheckError::Digest { len });
    }
    Ok(())
}

fn is_header(b: &[u8; HEADER_LEN]) -> bool {
    FrameHeader::decode(b).is_ok_and(|h| h.kind == Kind::CheckpointHeader)
}

/// The `CheckpointEnd` body: byte count and digest (for readers that walk the frames).
pub fn decode_end(body: &[u8]) -> Result<(u64, [u8; 32]), FrameError> {
    if body.len() != END_BODY {
        return Err(FrameError::Body { kind: Kind::CheckpointEnd, detail: format!("{} bytes, expected {END_BODY}", body.len()) });
    }
    Ok((u64::from_le_bytes(body[..8].try_into().expect("8 bytes")), body[8..].try_into().expect("32 bytes")))
}

/// Name of the `n`-th file (1-based) of a periodic series with at most `max` files (0: no limit):
/// `BASE.1`, `BASE.2`, ...; after `BASE.max` the numbering starts again at 1 (MOSIX `-N`).
pub fn series_name(base: &str, n: u64, max: u32) -> String {
    let i = if max == 0 { n } else { (n.max(1) - 1) % u64::from(max) + 1 };
    format!("{base}.{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::Failed;

    fn sample() -> Vec<u8> {
        let mut w = HashingWriter::new(Vec::new());
        let h = Header {
            format: FORMAT,
            created_unix: 1,
            node: 1,
            pid: 42,
            uid: 0,
            gid: 0,
            command: vec!["prog".into()],
            cwd: "/".into(),
            umask: 0o22,
        };
        frame::write_msg(&mut w, Kind::CheckpointHeader, &h).unwrap();
        frame::write_msg(&mut w, Kind::Failed, &Failed { reason: "x".repeat(3000) }).unwrap();
        let (v, n) = w.finish().unwrap();
        assert_eq!(n as usize, v.len());
        v
    }

    #[test]
    fn seal_equals_hashing_writer() {
        let v = sample();
        let mut c = std::io::Cursor::new(v[..v.len() - END_LEN].to_vec());
        let n = seal(&mut c).unwrap();
        assert_eq!(n as usize, v.len());
        assert_eq!(c.into_inner(), v);
    }

    #[test]
    fn intact_file_verifies() {
        let v = sample();
        verify(&mut &v[..], v.len() as u64).unwrap();
    }

    #[test]
    fn every_truncation_is_refused() {
        let v = sample();
        for cut in 0..v.len() {
            let e = verify(&mut &v[..cut], cut as u64).unwrap_err();
            assert!(matches!(e, CheckError::Truncated { .. } | CheckError::NotCheckpoint), "cut {cut}: {e}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let v = sample();
        for i in 0..v.len() {
            let mut c = v.clone();
            c[i] ^= 0x40;
            assert!(verify(&mut &c[..], c.len() as u64).is_err(), "flip at {i} accepted");
        }
    }

    /// Seeds of the `checkpoint` fuzz target (`cargo test -p mos-proto --lib -- --ignored
    /// write_checkpoint_fuzz_seeds`).
    #[test]
    #[ignore]
    fn write_checkpoint_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/checkpoint");
        std::fs::create_dir_all(&dir).unwrap();
        let file = sample();
        std::fs::write(dir.join("file"), &file).unwrap();
        let header_len = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
        std::fs::write(dir.join("header"), &file[HEADER_LEN..HEADER_LEN + header_len]).unwrap();
        let table = FileTable {
            fds: vec![
                FdEntry { fd: 1, flags: 0o1, offset: 0, target: FdTarget::Stdio { of: 1, what: "pipe:[7]".into() } },
                FdEntry { fd: 3, flags: 0o2102001, offset: 42, target: FdTarget::File { path: "/tmp/log".into(), size: 42 } },
                FdEntry { fd: 4, flags: 0, offset: 0, target: FdTarget::Tty { path: "/dev/pts/1".into() } },
            ],
        };
        std::fs::write(dir.join("file_table"), postcard::to_allocvec(&table).unwrap()).unwrap();
        std::fs::write(dir.join("end"), &file[file.len() - END_BODY..]).unwrap();
    }

    #[test]
    fn series_wraps_at_max() {
        let names: Vec<String> = (1..=5).map(|n| series_name("ck", n, 2)).collect();
        assert_eq!(names, ["ck.1", "ck.2", "ck.1", "ck.2", "ck.1"]);
        assert_eq!(series_name("ck", 7, 0), "ck.7");
    }
}
