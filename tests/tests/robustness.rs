//! Daemons going away while processes depend on them (issue 7's fault cases that need no
//! injected faults; migration faults are in migration.rs).
use mos_tests::vnode::VNodeSpec;
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

/// The pid of `pid`'s remote component on node `i`, once node `i` lists it as a guest.
fn guest_pid(c: &Cluster, i: u32, pid: u32) -> u32 {
    let row = wait_until(after(Duration::from_secs(20)), &format!("node {i} to host pid {pid}"), || c.ps_row(i, pid, true));
    row["local_pid"].as_u64().unwrap_or_else(|| panic!("guest row without local_pid: {row}")) as u32
}

/// Waits until the remote component `local` has ended and node `i` no longer lists `pid`.
fn wait_gone(c: &Cluster, i: u32, pid: u32, local: u32, within: Duration, why: &str) -> Duration {
    let t0 = std::time::Instant::now();
    wait_until(after(within), &format!("the remote component {local} on node {i} to end after {why}"), || {
        (!mos_tests::alive(local) && c.ps_row(i, pid, true).is_none()).then_some(())
    });
    t0.elapsed()
}

/// The home node dies while its process runs on node 2: mosrun (and with it the deputy) and the
/// home mosd are killed. The remote component must end, not run on as an orphan whose files,
/// parent and output are gone.
#[test]
fn the_remote_component_ends_when_its_home_dies() {
    let mut c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["4000", "50"]);
    job.wait_lines(2, TIMEOUT);
    c.migrate(1, pid, "2");
    let local = guest_pid(&c, 2, pid);
    assert!(mos_tests::alive(local), "the remote component {local} does not run");
    job.proc.kill();
    c.kill_node(1);
    let took = wait_gone(&c, 2, pid, local, Duration::from_secs(20), "its home was killed");
    println!("remote component ended {} ms after its home was killed", took.as_millis());
    assert!(!mos_tests::alive(pid), "the home task {pid} survived mosrun");
}

/// The home node vanishes without a word (all its packets dropped, as when it loses power or the
/// network): the remote component's deputy channel times out (keepalive or TCP_USER_TIMEOUT,
/// engine::migrate::PEER_TIMEOUT) and it ends; mosrun at home reports the process lost.
#[test]
fn the_remote_component_ends_when_its_home_vanishes() {
    let specs: Vec<VNodeSpec> = (0..2).map(|_| VNodeSpec { netns: true, ..VNodeSpec::default() }).collect();
    let c = Cluster::start_virtual(&specs, &[]);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["4000", "50"]);
    job.wait_lines(2, TIMEOUT);
    c.migrate(1, pid, "2");
    let local = guest_pid(&c, 2, pid);
    mos_tests::faults::impair(&c, 1, 100);
    let took = wait_gone(&c, 2, pid, local, Duration::from_secs(90), "its home vanished");
    println!("remote component ended {} ms after its home vanished", took.as_millis());
    let st = job.wait(TIMEOUT);
    assert!(!st.success(), "mosrun succeeded although its process was lost");
}
