//! The cluster view that gossip gives every node (`mosctl status`).
use mos_tests::{after, wait_until, Cluster};
use serde_json::Value;
use std::time::Duration;

fn states(c: &Cluster, i: u32) -> Vec<(u64, String, u64)> {
    let out = c.mosctl(i, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    v["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| (n["node"].as_u64().unwrap(), n["state"].as_str().unwrap().to_string(), n["age_ms"].as_u64().unwrap()))
        .collect()
}

/// Every node sees every node up with fresh information; a node killed with SIGKILL is shown
/// down, and up again after it restarts.
#[test]
fn every_node_sees_the_cluster_and_a_dead_node() {
    let mut c = Cluster::start(3);
    for i in 1..=3 {
        wait_until(after(Duration::from_secs(20)), &format!("node {i} to see 3 nodes up"), || {
            let s = states(&c, i);
            (s.len() == 3 && s.iter().all(|(_, st, age)| st == "up" && *age <= 3000)).then_some(())
        });
    }
    c.kill_node(3);
    wait_until(after(Duration::from_secs(40)), "node 1 to show node 3 down", || {
        states(&c, 1).iter().any(|(n, st, _)| *n == 3 && st == "down").then_some(())
    });
    c.restart_node(3, &[]);
    wait_until(after(Duration::from_secs(20)), "node 1 to show node 3 up again", || {
        states(&c, 1).iter().any(|(n, st, _)| *n == 3 && st == "up").then_some(())
    });
}
