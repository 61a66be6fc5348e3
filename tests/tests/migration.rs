//! Migration and fault integration tests on a local cluster (nodes on 127.0.0.1..n, each test on
//! its own port). Every test compares the job's stdout under MOS byte for byte with a reference
//! run of the same program without MOS, and its exit status (mosrun's) with the reference's.
//!
//! Run: `cargo build --bins && cargo test -p mos-tests` (the daemons are other packages of the
//! workspace: build them first, or point `MOS_BIN_DIR` at a directory holding mosd, mosrun and
//! mosctl). Tests run in parallel; on a failure every node's log and each job's output are
//! printed to stderr.
use mos_tests::{after, assert_same_output, cpu_ticks, describe, reference, wait_until, wl, Cluster, RunningJob};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");
const REF_TIMEOUT: Duration = Duration::from_secs(120);
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(120);

/// Steps and ms per step of the counter workloads: about 6 s per run.
const STEPS: usize = 60;
const MS: &str = "100";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reference run: expected stdout and exit code.
fn expect(program: &str, args: &[&str], code: i32) -> Vec<u8> {
    let out = reference(program, args, REF_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(code),
        "reference run of {program} {args:?} ended with {}: {}",
        describe(&out.status),
        text(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "reference run of {program} printed nothing");
    out.stdout
}

/// Waits for the job's end and checks output and status against the reference.
fn finish(job: &mut RunningJob, want: &[u8], code: i32, what: &str) {
    let status = job.wait(END_TIMEOUT);
    assert_same_output(&job.stdout(), want, what);
    assert_eq!(status.code(), Some(code), "{what}: mosrun ended with {} (stderr: {})", describe(&status), text(&job.stderr()));
}

fn field_u64(row: &Value, name: &str) -> u64 {
    row[name].as_u64().unwrap_or_else(|| panic!("ps row has no numeric `{name}`: {row}"))
}

/// Asserts that home node 1 shows `pid` running on `node`.
fn assert_home_row(c: &Cluster, pid: u32, node: u32) {
    let row = c.ps_row(1, pid, false).unwrap_or_else(|| panic!("node 1 (home) does not list pid {pid}: {}", c.ps(1)));
    assert_eq!(field_u64(&row, "node"), u64::from(node), "home node 1 shows pid {pid} on the wrong node: {row}");
    assert_eq!(field_u64(&row, "home"), 1, "home of pid {pid}: {row}");
}

/// Asserts that node `node` hosts `pid` as a guest, with a live local process, and returns it.
fn assert_guest_row(c: &Cluster, pid: u32, node: u32) -> u32 {
    let row = c.ps_row(node, pid, true).unwrap_or_else(|| panic!("node {node} does not list pid {pid} as a guest: {}", c.ps(node)));
    assert_eq!(field_u64(&row, "home"), 1, "guest row on node {node}: {row}");
    assert_eq!(field_u64(&row, "node"), u64::from(node), "guest row on node {node}: {row}");
    let local = field_u64(&row, "local_pid") as u32;
    assert_ne!(local, pid, "guest on node {node} has the home pid as its local pid: {row}");
    assert!(mos_tests::alive(local), "guest on node {node} lists local pid {local}, which does not run: {row}");
    local
}

/// Waits until node `node` no longer hosts `pid` as a guest.
fn wait_no_guest(c: &Cluster, pid: u32, node: u32) {
    let what = format!("node {node} to stop listing pid {pid} as a guest");
    wait_until(after(Duration::from_secs(10)), &what, || c.ps_row(node, pid, true).is_none().then_some(()));
}

/// While the job is away, the home pid (now its deputy) must use no CPU of its own: over a window
/// in which the job prints at least 2 lines (each burning ~100 ms of CPU), the home pid's
/// utime+stime may grow by at most 2 ticks (forwarded writes cost the deputy a little system time).
fn assert_home_cpu_flat(job: &mut RunningJob, pid: u32, node: u32) {
    let before = cpu_ticks(pid);
    let l0 = job.lines();
    job.wait_lines(l0 + 2, LINE_TIMEOUT);
    let after_ = cpu_ticks(pid);
    assert!(
        after_ - before <= 2,
        "pid {pid} is supposed to run on node {node}, but its home task used {} ticks of CPU while the job printed 2 lines",
        after_ - before
    );
}

/// Checks that the CPU-time measure works: at home the job's pid does use CPU over 4 lines.
fn assert_home_cpu_grows(job: &mut RunningJob, pid: u32) {
    // Four steps, so that a machine loaded by other work still gives the job a few ticks.
    let before = cpu_ticks(pid);
    let l0 = job.lines();
    job.wait_lines(l0 + 4, LINE_TIMEOUT);
    let after_ = cpu_ticks(pid);
    assert!(after_ - before >= 3, "at home, pid {pid} used only {} ticks over 4 steps of ~{MS} ms", after_ - before);
}

/// Runs `program` under mosrun on node 1 of a 3-node cluster and moves it home -> 2 -> 3 -> home
/// at distinct progress points; output and exit status must equal the reference's.
fn round_trip(program: &str) {
    let steps = STEPS.to_string();
    let args = [steps.as_str(), MS];
    let want = expect(program, &args, 7);
    let c = Cluster::start(3);
    let (mut job, pid) = c.start_job(1, program, &args);

    job.wait_lines(2, LINE_TIMEOUT);
    assert_home_cpu_grows(&mut job, pid);

    let at_first = job.wait_lines(8, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    assert_home_row(&c, pid, 2);
    assert_guest_row(&c, pid, 2);
    assert_home_cpu_flat(&mut job, pid, 2);

    let at_second = job.wait_lines(25, LINE_TIMEOUT);
    assert!(at_second > at_first);
    c.migrate(1, pid, "3");
    assert_home_row(&c, pid, 3);
    assert_guest_row(&c, pid, 3);
    wait_no_guest(&c, pid, 2);
    assert_home_cpu_flat(&mut job, pid, 3);

    let at_third = job.wait_lines(40, LINE_TIMEOUT);
    assert!(at_third > at_second);
    assert!(at_third < STEPS, "the job ended before it could be brought home");
    c.migrate(1, pid, "home");
    assert_home_row(&c, pid, 1);
    wait_no_guest(&c, pid, 3);
    assert!(job.lines() < STEPS, "the job ended before its return home could be checked");
    assert_home_cpu_grows(&mut job, pid);

    finish(&mut job, &want, 7, &format!("{program} migrated home -> 2 -> 3 -> home"));
}

#[test]
fn workloads_are_deterministic_and_agree() {
    let want = expect(wl::COUNTER_STATIC, &["12", "5"], 7);
    assert_eq!(want.iter().filter(|b| **b == b'\n').count(), 12);
    for p in [wl::COUNTER_STATIC, wl::COUNTER_DYNAMIC, wl::COUNTER_PIE, WL_RUST] {
        assert_same_output(&expect(p, &["12", "5"], 7), &want, p);
    }
    let m = expect(wl::MEMTOUCH_STATIC, &["8", "10"], 0);
    assert_same_output(&expect(wl::MEMTOUCH_PIE, &["8", "10"], 0), &m, "memtouch");
    let t = expect(wl::THREADS_DYNAMIC, &["3"], 7);
    assert_same_output(&expect(wl::THREADS_STATIC, &["3"], 7), &t, "threads");
}

#[test]
fn round_trip_counter_static() {
    round_trip(wl::COUNTER_STATIC);
}

#[test]
fn round_trip_counter_dynamic() {
    round_trip(wl::COUNTER_DYNAMIC);
}

#[test]
fn round_trip_counter_pie() {
    round_trip(wl::COUNTER_PIE);
}

#[test]
fn round_trip_wl_rust() {
    round_trip(WL_RUST);
}

/// A failed migration: mosctl exits nonzero and says the process keeps running at home.
fn assert_failed_at_home(out: &Output, what: &str) {
    assert!(!out.status.success(), "{what}: mosctl migrate succeeded: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("keeps running at home"), "{what}: mosctl's error does not say the process keeps running at home: {err:?}");
}

/// Node 2 dies at fault point `point` of an incoming migration (MOS_FAULT); the migration fails,
/// the job goes on at home and ends as the reference does.
fn fault_test(point: &str, program: &str, args: &[&str], code: i32, extra_env: &[(&str, &str)]) {
    let want = expect(program, args, code);
    let mut c = Cluster::start(2);
    let mut env = vec![("MOS_FAULT", point)];
    env.extend_from_slice(extra_env);
    c.restart_node(2, &env);
    let (mut job, pid) = c.start_job(1, program, args);
    job.wait_lines(3, LINE_TIMEOUT);
    let out = c.mosctl(1, &["migrate", &pid.to_string(), "2"]);
    assert_failed_at_home(&out, &format!("MOS_FAULT={point}"));
    let st = c.wait_node_exit(2, Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "node 2 should have killed itself at {point}, but ended with {}",
        describe(&st)
    );
    assert!(job.try_status().is_none(), "the job ended when the migration failed");
    assert_home_row(&c, pid, 1);
    let n = job.lines();
    job.wait_lines(n + 2, LINE_TIMEOUT);
    finish(&mut job, &want, code, &format!("job after a migration failed at {point}"));
}

#[test]
fn fault_after_offer() {
    fault_test("after-offer", wl::COUNTER_DYNAMIC, &["40", "50"], 7, &[]);
}

#[test]
fn fault_after_accept() {
    fault_test("after-accept", wl::COUNTER_PIE, &["40", "50"], 7, &[]);
}

#[test]
fn fault_mid_pages() {
    // 64 MiB travel in at least 4 page frames; die after the second.
    fault_test("mid-pages", wl::MEMTOUCH_DYNAMIC, &["64", "60", "50"], 0, &[("MOS_FAULT_AFTER", "2")]);
}

#[test]
fn fault_before_resumed() {
    fault_test("before-resumed", wl::COUNTER_STATIC, &["40", "50"], 7, &[]);
}

/// The test SIGKILLs the target while a 512 MiB process streams to it.
#[test]
fn target_killed_during_big_migration() {
    let args = ["512", "60", "25"];
    let want = expect(wl::MEMTOUCH_STATIC, &args, 0);
    let mut c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, wl::MEMTOUCH_STATIC, &args);
    job.wait_lines(2, LINE_TIMEOUT);
    let mosd2 = c.node_pid(2).expect("node 2 runs");
    let mut mig = c.spawn_mosctl(1, &["migrate", &pid.to_string(), "2"]);
    // In the middle: a process on node 2 (the stub being filled) holds more than 32 MiB.
    let receiving = mos_tests::wait_receiving(&mut mig, mosd2, 32 * 1024);
    c.kill_node(2);
    eprintln!("killed node 2 while its process {} held {} KiB", receiving.0, receiving.1);
    let out = mig.output(after(Duration::from_secs(120)));
    assert_failed_at_home(&out, "target killed during the page stream");
    assert!(job.try_status().is_none(), "the job ended when the migration failed");
    assert_home_row(&c, pid, 1);
    finish(&mut job, &want, 0, "job after its target died mid-migration");
}

/// Migrating to a node that is down fails cleanly; the job can still move elsewhere and ends well.
#[test]
fn migrate_to_down_node() {
    let steps = STEPS.to_string();
    let args = [steps.as_str(), MS];
    let want = expect(wl::COUNTER_DYNAMIC, &args, 7);
    let mut c = Cluster::start(3);
    c.kill_node(3);
    let (mut job, pid) = c.start_job(1, wl::COUNTER_DYNAMIC, &args);
    job.wait_lines(3, LINE_TIMEOUT);
    let out = c.mosctl(1, &["migrate", &pid.to_string(), "3"]);
    assert!(!out.status.success(), "migration to a node that is down succeeded: {}", text(&out.stdout));
    assert!(!out.stderr.is_empty(), "mosctl failed without saying why");
    assert!(job.try_status().is_none(), "the job ended when the migration failed");
    assert_home_row(&c, pid, 1);
    let n = job.lines();
    job.wait_lines(n + 2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    assert_home_row(&c, pid, 2);
    let n = job.lines();
    job.wait_lines(n + 2, LINE_TIMEOUT);
    c.migrate(1, pid, "home");
    assert_home_row(&c, pid, 1);
    finish(&mut job, &want, 7, "job after a migration to a node that is down");
}

/// A process with two threads is refused with a reason about threads and runs on at home.
#[test]
fn threads_are_refused() {
    let args = ["40", "50"];
    let want = expect(wl::THREADS_DYNAMIC, &args, 7);
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, wl::THREADS_DYNAMIC, &args);
    job.wait_lines(3, LINE_TIMEOUT);
    let out = c.mosctl(1, &["migrate", &pid.to_string(), "2"]);
    assert!(!out.status.success(), "a 2-thread process was migrated: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("thread"), "the refusal does not mention threads: {err:?}");
    assert!(job.try_status().is_none(), "the job ended when the migration was refused");
    assert_home_row(&c, pid, 1);
    assert!(c.ps_row(2, pid, true).is_none(), "node 2 lists the refused process as a guest");
    finish(&mut job, &want, 7, "2-thread job after a refused migration");
}
