//! This node's own status row; the rows of the other nodes come from gossip (gossip.rs).
use crate::Node;
use mos_proto::control::NodeStatus;

fn meminfo() -> (u64, u64) {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |k: &str| {
        t.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            * 1024
    };
    (field("MemAvailable:"), field("MemTotal:"))
}

pub fn this_node(node: &Node) -> NodeStatus {
    let load =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok())).unwrap_or(0.0);
    let (mem_free, mem_total) = meminfo();
    let (procs, guests) = node.registry.counts();
    NodeStatus {
        node: node.number,
        address: node.addr.to_string(),
        state: "up".into(),
        ncpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        load,
        mem_free,
        mem_total,
        procs,
        guests,
        age_ms: 0,
    }
}
