//! Where a program starts: `mosrun -N NODE`, `-r HOST`, `-b` (best node), and a refusal for an
//! unknown node.
use mos_tests::{after, wait_until, Cluster};
use std::time::Duration;

const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");
const TIMEOUT: Duration = Duration::from_secs(120);

fn started_on(opts: &[&str], node: u32) {
    let args = ["30", "40"];
    let want = mos_tests::reference(WL_RUST, &args, TIMEOUT);
    let c = Cluster::start(3);
    let mut job = c.spawn_mosrun_with(1, opts, WL_RUST, &args);
    let pid = job.pid();
    wait_until(after(Duration::from_secs(20)), &format!("the job to run on node {node}"), || {
        c.ps_row(1, pid, false).and_then(|r| r["node"].as_u64()).filter(|n| *n == u64::from(node))
    });
    let st = job.wait(TIMEOUT);
    assert_eq!(st.code(), Some(7), "exit status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "output of a job started elsewhere");
}

#[test]
fn start_on_a_node_by_number() {
    started_on(&["-N", "2"], 2);
}

#[test]
fn start_on_a_host_by_address() {
    started_on(&["-r", "127.0.0.3"], 3);
}

#[test]
fn unknown_node_is_refused_before_starting() {
    let c = Cluster::start(2);
    let mut job = c.spawn_mosrun_with(1, &["-N", "9"], WL_RUST, &["3", "0"]);
    let st = job.wait(TIMEOUT);
    assert!(!st.success(), "mosrun -N 9 succeeded");
    let err = String::from_utf8_lossy(&job.stderr()).into_owned();
    assert!(err.contains("not a node"), "no reason given: {err}");
    assert!(job.stdout().is_empty(), "the program ran although its node is unknown");
}

/// `-b` starts the job on some node of the cluster and it runs correctly there.
#[test]
fn start_on_the_best_node() {
    let args = ["20", "40"];
    let want = mos_tests::reference(WL_RUST, &args, TIMEOUT);
    let c = Cluster::start(3);
    wait_until(after(Duration::from_secs(20)), "node 1 to know the cluster", || {
        let out = c.try_mosctl(1, &["status", "--json"], Duration::from_secs(10));
        (String::from_utf8_lossy(&out.stdout).matches("\"up\"").count() == 3).then_some(())
    });
    let mut job = c.spawn_mosrun_with(1, &["-b", "-m", "64"], WL_RUST, &args);
    let st = job.wait(TIMEOUT);
    assert_eq!(st.code(), Some(7), "exit status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "output of a job placed with -b");
}
