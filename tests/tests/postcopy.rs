//! Post-copy (lazy) migration, `mosctl migrate --lazy`: the process resumes on the target before
//! its memory is there; pages come on fault and in the background. A process that reads and
//! writes all of its memory after the move (memtouch: a checksum of an eighth of its area every
//! step, of all of it at the end; churn: writes, drops pages, maps, unmaps and sbrk's while its
//! pages arrive, then checks every page) must print exactly what a run without MOS prints; the
//! statistics must show faults served from home.
//!
//! Run: `cargo build --bins && cargo test -p mos-tests --test postcopy -- --test-threads=1`.
use mos_tests::{after, assert_same_output, describe, reference, rss_kib, wait_until, wl, Cluster};
use serde_json::Value;
use std::time::Duration;

const REF_TIMEOUT: Duration = Duration::from_secs(120);
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(120);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no numeric `{k}` in {v}"))
}

/// A userfaultfd descriptor of `pid`, or an area registered with one (VmFlags `um`/`uw`).
fn uffd_trace(pid: u32) -> Option<String> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let l = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
        if l.contains("userfaultfd") {
            return Some(format!("fd {:?} -> {l}", e.file_name()));
        }
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    smaps.lines().find(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw" || f == "um")).map(str::to_string)
}

/// Runs `program args` under mosrun on node 1, waits for `lines` lines, moves it lazily to node 2,
/// checks its output against a run without MOS and returns the statistics.
fn lazy_move(program: &str, args: &[&str], lines: usize) -> Value {
    lazy_move_in(&Cluster::start(2), program, args, lines)
}

/// [`lazy_move`] on the cluster `c`.
fn lazy_move_in(c: &Cluster, program: &str, args: &[&str], lines: usize) -> Value {
    let want = reference(program, args, REF_TIMEOUT);
    assert_eq!(want.status.code(), Some(0), "reference run of {program}: {} {}", describe(&want.status), text(&want.stderr));
    let (mut job, pid) = c.start_job(1, program, args);
    job.wait_lines(lines, LINE_TIMEOUT);
    let pid_s = pid.to_string();
    let out = c.mosctl(1, &["migrate", "--wait", "--json", "--lazy", &pid_s, "2"]);
    assert!(out.status.success(), "mosctl migrate --lazy: {} {}", text(&out.stdout), text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {}", text(&out.stdout)));
    assert!(job.try_status().is_none(), "the job ended before the move could be checked");
    let row = c.ps_row(1, pid, false).unwrap_or_else(|| panic!("node 1 does not list {pid}: {}", c.ps(1)));
    assert_eq!(num(&row, "node"), 2, "{row}");
    // The lazy phase is over when mosctl returns: the guest keeps no registered area (closing the
    // userfaultfd unregistered them all) and holds no userfaultfd descriptor.
    let guest = c.ps_row(2, pid, true).unwrap_or_else(|| panic!("node 2 does not list {pid} as a guest: {}", c.ps(2)));
    let local = num(&guest, "local_pid") as u32;
    assert_eq!(uffd_trace(local), None, "the guest still has a userfaultfd trace after the lazy phase");
    // Home frees its copy once node 2 has every page.
    wait_until(after(Duration::from_secs(10)), "the home copy to be freed", || rss_kib(pid).filter(|k| *k < 16 * 1024));
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want.stdout, &format!("{program} {args:?} moved lazily home -> 2"));
    assert_eq!(status.code(), Some(0), "mosrun ended with {}: {}", describe(&status), text(&job.stderr()));
    assert_eq!(num(&stats, "rounds"), 1, "{stats}");
    let lazy_us = num(&stats, "lazy_us");
    assert!(lazy_us > 0, "no lazy phase: {stats}");
    assert!(num(&stats, "frozen_us") <= num(&stats, "total_us"), "{stats}");
    stats
}

/// memtouch reads an eighth of its 64 MiB right after resuming (before its next output line), and
/// all of it at the end.
#[test]
fn lazy_memtouch_reads_all_its_memory_exactly() {
    // Whether it faults depends on where the freeze caught it (a forwarded call waits until the
    // lazy phase ends): churn below must.
    let st = lazy_move(wl::MEMTOUCH_STATIC, &["64", "400", "2"], 3);
    assert!(num(&st, "pages_sent") >= 16384, "64 MiB of non-zero data but only {} pages sent: {st}", num(&st, "pages_sent"));
}

/// On a cluster with a key the lazy phase runs over the encrypted stream, each direction lent to
/// its own thread on both sides, and the connection then carries the deputy channel (churn
/// writes its lines through it).
#[test]
fn lazy_churn_is_exact_on_a_keyed_cluster() {
    const KEY: &str = "the post-copy test's cluster key\n";
    let c = Cluster::start_with_env(2, &[(1, "MOS_TEST_KEY", KEY), (2, "MOS_TEST_KEY", KEY)]);
    let st = lazy_move_in(&c, wl::CHURN_DYNAMIC, &["64", "3000", "2000", "25"], 3);
    assert!(num(&st, "faults") >= 1, "{st}");
    assert!(c.log(2).contains("secure=true"), "node 2 did not take the process on a secure stream:\n{}", c.log(2));
}

/// churn writes pages, drops some (MADV_DONTNEED: they must read as zero, not as home's copy),
/// maps, unmaps and moves its heap while its pages arrive; then checks every page.
#[test]
fn lazy_churn_is_exact_dynamic() {
    let st = lazy_move(wl::CHURN_DYNAMIC, &["64", "3000", "2000", "25"], 3);
    assert!(num(&st, "faults") >= 1, "{st}");
}

/// (A static binary keeps its TLS, and so its rseq area, in its heap, which is lazy: the restore's
/// rseq registration must not leave that page zero.)
#[test]
fn lazy_churn_is_exact_static() {
    let st = lazy_move(wl::CHURN_STATIC, &["64", "3000", "2000", "25"], 3);
    // It writes 25 random pages every 2 ms, and prints every 100 steps only.
    assert!(num(&st, "faults") >= 1, "the process resumed before its pages and writes all the time, so it must have faulted: {st}");
}

/// The target dies in the middle of the lazy phase (MOS_FAULT=mid-lazy, after 20 page frames):
/// the move fails, the process resumes at home from where it froze (home kept it intact) and its
/// output is still exact.
#[test]
fn target_dies_during_the_lazy_phase() {
    let args = ["64", "3000", "2000", "25"];
    let program = wl::CHURN_STATIC;
    let want = reference(program, &args, REF_TIMEOUT);
    assert_eq!(want.status.code(), Some(0), "reference run: {}", text(&want.stderr));
    let mut c = Cluster::start(2);
    c.restart_node(2, &[("MOS_FAULT", "mid-lazy"), ("MOS_FAULT_AFTER", "20")]);
    let (mut job, pid) = c.start_job(1, program, &args);
    job.wait_lines(3, LINE_TIMEOUT);
    let out = c.mosctl(1, &["migrate", "--lazy", &pid.to_string(), "2"]);
    assert!(!out.status.success(), "the move succeeded although node 2 died in its lazy phase: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("keeps running at home"), "{}", text(&out.stderr));
    let st = c.wait_node_exit(2, Duration::from_secs(10));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "node 2 ended with {}", describe(&st));
    assert!(job.try_status().is_none(), "the job ended when the move failed");
    let row = c.ps_row(1, pid, false).unwrap_or_else(|| panic!("node 1 does not list {pid}: {}", c.ps(1)));
    assert_eq!(num(&row, "node"), 1, "the process should be at home (node 1): {row}");
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want.stdout, "churn after its target died in the lazy phase");
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
}
