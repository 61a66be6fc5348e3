//! Automatic load balancing and memory ushering on virtual nodes (own cgroup with a CPU quota or
//! a memory limit), and the node switches (`stay`, `block`, `expel`, `bring`, `shutdown`).
use mos_tests::vnode::VNodeSpec;
use mos_tests::{after, wait_until, wl, Cluster, RunningJob};
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");

fn half_cpu_nodes(n: usize) -> Vec<VNodeSpec> {
    (0..n).map(|_| VNodeSpec { cpu: Some(0.5), ..VNodeSpec::default() }).collect()
}

/// Node each job runs on now, from home's `mosctl ps --json`.
fn placement(c: &Cluster, pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|p| c.ps_row(1, *p, false).and_then(|r| r["node"].as_u64()).unwrap_or(0)).collect()
}

fn finish(c: &Cluster, jobs: Vec<(RunningJob, u32)>, args: &[&str]) {
    let want = mos_tests::reference(wl::CPUJOB_STATIC, args, TIMEOUT);
    for (mut job, pid) in jobs {
        let st = job.wait(TIMEOUT);
        assert_eq!(st.code(), Some(0), "job {pid} status; node 1 log:\n{}", c.log(1));
        mos_tests::assert_same_output(&job.stdout(), &want.stdout, "output of a balanced job");
    }
}

/// Three 0.5-CPU nodes; three CPU-bound jobs started on node 1 while it is in `stay` do not
/// move; after `nostay` they spread over the three nodes by themselves, except a `-L` job,
/// which never leaves. Node 1 reports the shape of its cgroup (1 CPU at half speed).
#[test]
fn cpu_bound_jobs_spread_over_virtual_nodes_but_not_when_told_to_stay() {
    let env: Vec<(u32, &str, &str)> = (1..=3).map(|i| (i, "MOS_TEST_BALANCE", "1")).collect();
    let c = Cluster::start_virtual(&half_cpu_nodes(3), &env);
    let st = c.mosctl_json(1, &["status", "1", "--json"]);
    let me = &st["nodes"][0];
    assert_eq!(me["ncpus"].as_u64(), Some(1), "node 1 in a 0.5-CPU cgroup: {me}");
    assert!(c.log(1).contains("cpu_quota=Some(0.5)"), "mosd did not see its CPU quota:\n{}", c.log(1));
    assert!(c.mosctl(1, &["stay"]).status.success());
    let args = ["4000", "0", "40"];
    let mut jobs: Vec<(RunningJob, u32)> = (0..3).map(|_| c.start_job(1, wl::CPUJOB_STATIC, &args)).collect();
    let mut pinned = c.spawn_mosrun_with(1, &["-L"], wl::CPUJOB_STATIC, &args);
    let pinned_pid = pinned.pid();
    c.wait_registered(1, pinned_pid);
    let pids: Vec<u32> = jobs.iter().map(|(_, p)| *p).collect();
    // Four runnable jobs on half a CPU: without `stay` node 1 would start moving them within a
    // few seconds.
    let until = after(Duration::from_secs(6));
    while std::time::Instant::now() < until {
        assert!(placement(&c, &pids).iter().all(|n| *n == 1), "a job moved while node 1 was in `stay`: {:?}", placement(&c, &pids));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.mosctl(1, &["nostay"]).status.success());
    wait_until(after(Duration::from_secs(60)), "the jobs to spread over nodes 2 and 3", || {
        let at: BTreeSet<u64> = placement(&c, &pids).into_iter().collect();
        // The -L job is at home, or has ended (no row any more).
        let pinned_at = c.ps_row(1, pinned_pid, false).and_then(|r| r["node"].as_u64());
        assert!(pinned_at.is_none_or(|n| n == 1), "the -L job left home: on node {pinned_at:?}");
        (at.contains(&2) && at.contains(&3)).then_some(())
    });
    assert!(c.log(1).contains("balancer: moving a process"), "no automatic move logged");
    jobs.push((pinned, pinned_pid));
    finish(&c, jobs, &args);
}

/// Node 1 has a 256 MiB memory limit; a job that grows to 300 MiB there is ushered to another
/// node before it runs out (instead of being killed), and finishes with the right output.
#[test]
fn a_growing_job_is_ushered_away_from_a_node_out_of_memory() {
    let specs = vec![
        VNodeSpec { cpu: Some(1.0), mem_bytes: Some(256 << 20), ..VNodeSpec::default() },
        VNodeSpec { cpu: Some(1.0), ..VNodeSpec::default() },
    ];
    let env = [(1, "MOS_TEST_BALANCE", "1"), (2, "MOS_TEST_BALANCE", "1")];
    let c = Cluster::start_virtual(&specs, &env);
    let st = c.mosctl_json(1, &["status", "1", "--json"]);
    let total = st["nodes"][0]["mem_total"].as_u64().unwrap_or(0);
    assert_eq!(total >> 20, 256, "node 1 reports its cgroup's memory limit: {st}");
    // 300 MiB grown by 10 MiB steps of ~0.3 s each: about 30 MiB/s.
    let args = ["12000", "300", "60"];
    let (job, pid) = c.start_job(1, wl::CPUJOB_STATIC, &args);
    wait_until(after(Duration::from_secs(90)), "the growing job to be ushered to node 2", || {
        (placement(&c, &[pid]) == vec![2]).then_some(())
    });
    assert!(c.log(1).contains("why=Memory"), "the move was not decided by memory ushering:\n{}", c.log(1));
    // Ushering freezes at once: a growing job left running through pre-copy rounds can reach
    // the memory limit before it is moved.
    assert!(c.log(1).contains("mode=StopCopy"), "memory ushering did not use stop-and-copy:\n{}", c.log(1));
    finish(&c, vec![(job, pid)], &args);
}

/// `block` refuses new guests (and gossip shows it), `noblock` accepts them again, `expel` sends
/// guests home, `bring` calls own processes home, `shutdown` does both and stops the daemon,
/// which the other nodes then see leave. Admin commands need root.
#[test]
fn block_expel_bring_and_shutdown() {
    let mut c = Cluster::start(3);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["600", "50"]);
    job.wait_lines(2, TIMEOUT);
    // An ordinary user may look but not administer.
    let out = c.mosctl_as(65534, 2, &["block"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("needs root"), "mosctl block as uid 65534: {err}");
    assert!(c.mosctl(2, &["block"]).status.success());
    let out = c.migrate_fails(1, pid, "2");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("accepts no guests"), "refusal reason: {err}");
    wait_until(after(Duration::from_secs(20)), "node 1 to see node 2 blocked", || {
        let st = c.mosctl_json(1, &["status", "2", "--json"]);
        (st["nodes"][0]["state"].as_str() == Some("blocked")).then_some(())
    });
    assert!(c.mosctl(2, &["noblock"]).status.success());
    c.migrate(1, pid, "2");
    assert!(c.mosctl(2, &["expel"]).status.success());
    // Node 2 answers once it hosts nothing; home records the return a moment after it sent
    // `Resumed`, so its view may lag by that moment.
    wait_until(after(Duration::from_secs(5)), "home to show the expelled guest back home", || {
        (placement(&c, &[pid]) == vec![1]).then_some(())
    });
    c.migrate(1, pid, "3");
    assert!(c.mosctl(1, &["bring"]).status.success());
    assert_eq!(placement(&c, &[pid]), vec![1], "bring did not call the process home");
    c.migrate(1, pid, "3");
    assert!(c.mosctl(3, &["shutdown"]).status.success());
    let st = c.wait_node_exit(3, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "mosd of node 3 after shutdown");
    assert_eq!(placement(&c, &[pid]), vec![1], "shutdown did not send the guest home");
    wait_until(after(Duration::from_secs(20)), "node 1 to see node 3 leave", || {
        let st = c.mosctl_json(1, &["status", "3", "--json"]);
        matches!(st["nodes"][0]["state"].as_str(), Some("left" | "down")).then_some(())
    });
    let st = job.wait(TIMEOUT);
    assert_eq!(st.code(), Some(7), "the job's status");
}
