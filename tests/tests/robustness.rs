//! Daemons going away while processes depend on them (issue 7's fault cases that need no
//! injected faults; migration faults are in migration.rs).
use mos_tests::{after, wait_until, Cluster};
use std::time::Duration;

const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");
const TIMEOUT: Duration = Duration::from_secs(120);

/// mosd of node 2 is stopped (SIGTERM, as a service manager restarting it does) while it hosts a
/// guest: it sends the guest home first and exits 0; the process finishes at home with the same
/// output as an unmigrated run. The restarted node takes guests again.
#[test]
fn a_mosd_stopped_while_hosting_sends_its_guests_home_first() {
    let args = ["60", "50"];
    let want = mos_tests::reference(WL_RUST, &args, TIMEOUT);
    let mut c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &args);
    job.wait_lines(2, TIMEOUT);
    c.migrate(1, pid, "2");
    assert!(c.ps_row(2, pid, true).is_some(), "node 2 does not host the process");
    let mosd2 = c.node_pid(2).expect("node 2 runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mosd2 as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM mosd 2");
    let st = c.wait_node_exit(2, Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "mosd 2's status after SIGTERM; its log:\n{}", c.log(2));
    wait_until(after(Duration::from_secs(20)), "the process to be home", || {
        (c.ps_row(1, pid, false).and_then(|r| r["node"].as_u64()) == Some(1)).then_some(())
    });
    c.restart_node(2, &[]);
    wait_until(after(Duration::from_secs(20)), "node 1 to see node 2 up again", || {
        let v = c.mosctl_json(1, &["status", "2", "--json"]);
        (v["nodes"][0]["state"].as_str() == Some("up")).then_some(())
    });
    c.migrate(1, pid, "2");
    let st = job.wait(TIMEOUT);
    assert_eq!(st.code(), Some(7), "the job's status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "output of a job whose host was restarted");
}
