//! `checkpoint_bench [MIB...] [--runs N] [--dir DIR]`: checkpoint and recovery of a process whose
//! memory is MIB MiB of distinct non-zero pages (the memtouch workload; default 64 and 256), with
//! the engine's own calls (no cluster): for each size, N runs (default 3) of
//!
//! 1. `checkpoint` (continue): frozen time, total time to a durable file (fsync + rename), size;
//! 2. the process is killed; `recover` after dropping the page cache (cold; needs root, else "-");
//! 3. `recover` again, the file now in the page cache (warm);
//! 4. as a baseline, a plain write + fsync of as many bytes to the same directory.
//!
//! Prints medians as a Markdown table. Run as root: `cargo run --release -p mos-tests --bin
//! checkpoint_bench`.
use mos_engine::checkpoint::{self, Meta};
use mos_proto::control::AfterCheckpoint;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    mos_tests::rss_kib(pid).unwrap_or(0)
}

/// Starts memtouch with `mib` MiB and waits until its memory is filled.
fn start(mib: u64) -> std::process::Child {
    let child = Command::new(mos_tests::wl::MEMTOUCH_STATIC)
        .args([mib.to_string().as_str(), "1000000", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start memtouch");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while rss_kib(pid) < mib * 1024 {
        assert!(Instant::now() < deadline, "memtouch {mib} MiB did not fill its memory");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn end(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// Ends a child process when dropped (also when the bench panics).
struct Reaper(Pid);
impl Drop for Reaper {
    fn drop(&mut self) {
        end(self.0);
    }
}

fn drop_caches() -> bool {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Baseline: writing `bytes` of non-zero data to a file and fsyncing it, in ms.
fn raw_write(dir: &Path, bytes: u64) -> f64 {
    use std::io::Write;
    let path = dir.join("raw");
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).expect("create raw");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("write raw");
        left -= n as u64;
    }
    f.sync_all().expect("fsync raw");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_file(&path);
    ms
}

struct Run {
    raw_ms: f64,
    frozen_ms: f64,
    total_ms: f64,
    bytes: u64,
    warm_ms: f64,
    cold_ms: Option<f64>,
}

fn once(mib: u64, dir: &Path) -> Run {
    let file: PathBuf = dir.join(format!("bench-{mib}.ck"));
    let child = start(mib);
    let pid = Pid::from_raw(child.id() as i32);
    let original = Reaper(pid);
    let meta = Meta { node: 1, command: vec!["memtouch".into(), mib.to_string()] };
    let done = checkpoint::checkpoint(pid, &file, &meta, AfterCheckpoint::Continue).unwrap_or_else(|e| panic!("checkpoint: {e}"));
    drop(original);
    drop(child);
    let recover = || {
        let r = checkpoint::recover(&file, &[]).unwrap_or_else(|e| panic!("recover: {e}"));
        let _reaper = Reaper(r.pid);
        // The recovered process runs: its memory is all there.
        let resident = rss_kib(r.pid.as_raw() as u32);
        assert!(resident >= mib * 1024 * 15 / 16, "recovered process has {resident} KiB resident, expected {mib} MiB");
        std::thread::sleep(Duration::from_millis(50));
        assert!(mos_tests::alive(r.pid.as_raw() as u32), "the recovered process died");
        r.restore_us as f64 / 1e3
    };
    // Cold first (the file read from the disk), then warm (now in the page cache).
    let cold_ms = drop_caches().then(&recover);
    let warm_ms = recover();
    let _ = std::fs::remove_file(&file);
    let raw_ms = raw_write(dir, done.bytes);
    Run { raw_ms, frozen_ms: done.frozen_us as f64 / 1e3, total_ms: done.total_us as f64 / 1e3, bytes: done.bytes, warm_ms, cold_ms }
}

/// Marks every inherited descriptor above 2 close-on-exec (a shell's or cargo's stray pipe would
/// reach memtouch, and a pipe that is not the caller's stdio cannot be checkpointed).
fn hermetic() {
    use std::os::fd::BorrowedFd;
    for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()).filter(|fd| *fd > 2) {
            // SAFETY: `fd` was open when listed; a descriptor closed meanwhile only makes fcntl fail.
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
    }
}

fn main() {
    hermetic();
    let mut sizes = Vec::new();
    let mut runs = 3usize;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--dir" => dir = PathBuf::from(args.next().expect("--dir DIR")),
            s => sizes.push(s.parse::<u64>().unwrap_or_else(|_| panic!("not a size in MiB: {s}"))),
        }
    }
    if sizes.is_empty() {
        sizes = vec![64, 256];
    }
    let dir = tempfile::Builder::new().prefix("mos-ckpt-bench-").tempdir_in(&dir).expect("temp dir");
    println!("checkpoint to {} (fsync + rename), {runs} runs per size, medians", dir.path().display());
    println!();
    println!(
        "| memory | file size | frozen | checkpoint total | write MB/s | plain write+fsync of as many bytes | checkpoint / plain | recovery (page cache) | recovery (cold cache) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for mib in sizes {
        let rs: Vec<Run> = (0..runs).map(|_| once(mib, dir.path())).collect();
        let bytes = rs[0].bytes;
        let frozen = median(rs.iter().map(|r| r.frozen_ms).collect());
        let total = median(rs.iter().map(|r| r.total_ms).collect());
        let raw = median(rs.iter().map(|r| r.raw_ms).collect());
        let ratio = median(rs.iter().map(|r| r.total_ms / r.raw_ms).collect());
        let warm = median(rs.iter().map(|r| r.warm_ms).collect());
        let cold = rs.iter().map(|r| r.cold_ms).collect::<Option<Vec<f64>>>().map(median);
        println!(
            "| {mib} MiB | {:.1} MB | {frozen:.0} ms | {total:.0} ms | {:.0} | {raw:.0} ms | {ratio:.2} | {warm:.0} ms | {} |",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / (total / 1e3),
            cold.map_or("-".into(), |c| format!("{c:.0} ms"))
        );
    }
}
