//! Pre-copy live migration: a process that keeps writing memory, mapping and unmapping areas,
//! growing and shrinking its heap and dropping pages while its pages stream is moved out of home;
//! its output (a self-check of every page and a checksum of all memory) must equal a run without
//! MOS, and the statistics must show several rounds. Stop-and-copy stays selectable. A pre-copy
//! that fails leaves no trace in the process (no userfaultfd descriptor, no registered area).
//!
//! Run: `cargo build --bins && cargo test -p mos-tests --test precopy`.
use mos_tests::{after, assert_same_output, describe, reference, rss_kib, wait_until, wl, Cluster};
use serde_json::Value;
use std::time::Duration;

const REF_TIMEOUT: Duration = Duration::from_secs(120);
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(120);
/// 64 MiB, 3000 steps of 2 ms (about 6 s), 25 pages a step (about 50 MB/s).
const ARGS: [&str; 4] = ["64", "3000", "2000", "25"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn expected(program: &str) -> Vec<u8> {
    let out = reference(program, &ARGS, REF_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "reference run of {program}: {} {}", describe(&out.status), text(&out.stderr));
    assert!(text(&out.stdout).contains("verify ok"), "reference run of {program}: {}", text(&out.stdout));
    out.stdout
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no numeric `{k}` in {v}"))
}

/// Moves a churning process home -> 2 with `flags` while it runs, then checks its output and
/// returns the statistics `mosctl migrate --wait --json` printed.
fn move_churn(program: &str, flags: &[&str]) -> Value {
    let want = expected(program);
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, program, &ARGS);
    // Filled, and a few hundred steps into the churn (step lines come every 100 steps).
    job.wait_lines(3, LINE_TIMEOUT);
    let pid_s = pid.to_string();
    let mut args = vec!["migrate", "--wait", "--json"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[pid_s.as_str(), "2"]);
    let out = c.mosctl(1, &args);
    assert!(out.status.success(), "mosctl {args:?}: {} {}", text(&out.stdout), text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {}", text(&out.stdout)));
    assert!(job.lines() < 30, "the job ended before the move could be checked");
    let row = c.ps_row(1, pid, false).unwrap_or_else(|| panic!("node 1 does not list {pid}: {}", c.ps(1)));
    assert_eq!(num(&row, "node"), 2, "{row}");
    assert_eq!(row["last_migration"], stats, "mosctl ps --json keeps the last migration's statistics");
    // The home copy (the deputy's memory) is freed soon after, between forwarded calls.
    wait_until(after(Duration::from_secs(10)), "the home copy of the 64 MiB to be freed", || rss_kib(pid).filter(|k| *k < 16 * 1024));
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want, &format!("{program} moved home -> 2 ({flags:?}) while churning"));
    assert_eq!(status.code(), Some(0), "mosrun ended with {}: {}", describe(&status), text(&job.stderr()));
    let s = num(&stats, "frozen_us");
    assert!(s > 0 && s <= num(&stats, "total_us"), "frozen {s} us, total {} us", num(&stats, "total_us"));
    assert!(num(&stats, "pages_sent") >= 16384, "64 MiB of non-zero data but only {} pages sent", num(&stats, "pages_sent"));
    stats
}

#[test]
fn precopy_of_a_churning_process_is_exact_static() {
    let st = move_churn(wl::CHURN_STATIC, &[]);
    let rounds = num(&st, "rounds");
    assert!((2..=8).contains(&rounds), "pre-copy took {rounds} rounds: {st}");
    // Pages written during the rounds travel again: more than the 16384 of the area.
    assert!(num(&st, "pages_sent") > 16384, "{st}");
}

#[test]
fn precopy_of_a_churning_process_is_exact_dynamic() {
    let st = move_churn(wl::CHURN_DYNAMIC, &[]);
    assert!(num(&st, "rounds") >= 2, "{st}");
}

#[test]
fn stop_copy_stays_selectable() {
    let st = move_churn(wl::CHURN_PIE, &["--stop-copy"]);
    assert_eq!(num(&st, "rounds"), 1, "{st}");
}

/// True if `pid` holds a userfaultfd or has an area registered with one (VmFlags `uw`/`um`).
fn has_uffd_trace(pid: u32) -> Option<String> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir").flatten() {
        let l = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
        if l.contains("userfaultfd") {
            return Some(format!("fd {:?} -> {l}", e.file_name()));
        }
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    smaps.lines().find(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw" || f == "um")).map(str::to_string)
}

#[test]
fn failed_precopy_leaves_the_process_untouched() {
    let program = wl::CHURN_STATIC;
    let want = expected(program);
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, program, &ARGS);
    job.wait_lines(2, LINE_TIMEOUT);
    // The target refuses the offer, which comes after the process was armed for dirty tracking.
    let out = c.mosctl(2, &["block"]);
    assert!(out.status.success(), "mosctl block: {}", text(&out.stderr));
    let out = c.migrate_fails(1, pid, "2");
    assert!(text(&out.stderr).contains("keeps running at home"), "{}", text(&out.stderr));
    assert_eq!(has_uffd_trace(pid), None, "after a failed pre-copy the process still has a userfaultfd trace");
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want, "churn after a refused pre-copy");
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
}

/// A process that cannot take one more descriptor cannot be given a userfaultfd: the move falls
/// back to stop-and-copy, and succeeds.
#[test]
fn no_descriptor_left_falls_back_to_stop_copy() {
    let program = wl::CHURN_STATIC;
    let want = expected(program);
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, program, &ARGS);
    job.wait_lines(2, LINE_TIMEOUT);
    let used: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .collect();
    // The lowest free descriptor number: with that limit, no new descriptor can be made.
    let free = (0..).find(|n| !used.contains(n)).expect("a free number");
    let lim = format!("--nofile={free}");
    let out = std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &lim]).output().expect("run prlimit (util-linux)");
    assert!(out.status.success(), "prlimit: {}", text(&out.stderr));
    let out = c.mosctl(1, &["migrate", "--json", &pid.to_string(), "2"]);
    assert!(out.status.success(), "migrate: {} {}", text(&out.stdout), text(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert_eq!(num(&st, "rounds"), 1, "expected a stop-and-copy fallback: {st}");
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want, "churn moved with stop-and-copy for want of a descriptor");
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
}

/// The target dies while the pages stream and the process runs: the move fails, the process goes
/// on at home with no userfaultfd trace, and its output is still exact.
#[test]
fn target_killed_during_precopy() {
    let args = ["256", "3000", "2000", "25"];
    let program = wl::CHURN_STATIC;
    let out = reference(program, &args, REF_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "reference run: {}", text(&out.stderr));
    let want = out.stdout;
    let mut c = Cluster::start(2);
    let mut job = c.spawn_mosrun(1, program, &args);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(2, LINE_TIMEOUT);
    let mosd2 = c.node_pid(2).expect("node 2 runs");
    let mut mig = c.spawn_mosctl(1, &["migrate", &pid.to_string(), "2"]);
    mos_tests::wait_receiving(&mut mig, mosd2, 32 * 1024);
    c.kill_node(2);
    let out = mig.output(after(Duration::from_secs(120)));
    assert!(!out.status.success(), "the migration succeeded although its target was killed: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("keeps running at home"), "{}", text(&out.stderr));
    assert!(job.try_status().is_none(), "the job ended when the migration failed");
    assert_eq!(has_uffd_trace(pid), None, "after a failed pre-copy the process still has a userfaultfd trace");
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), &want, "churn after its target died during pre-copy");
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
}
