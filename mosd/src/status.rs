//! This node's own status row; its load, shape and memory are filled in from the brain's own
//! entry (gossip.rs), the rows of the other nodes come from gossip.
use crate::Node;
use mos_proto::control::NodeStatus;

pub fn this_node(node: &Node) -> NodeStatus {
    let (procs, guests) = node.registry.counts();
    let (bad_datagrams, bad_connections) = node.guard.counts();
    NodeStatus {
        node: node.number,
        address: node.addr.to_string(),
        state: if node.admin.blocked() { "blocked" } else { "up" }.into(),
        ncpus: 0,
        speed: 0,
        load: 0.0,
        mem_free: 0,
        mem_total: 0,
        procs,
        guests,
        age_ms: 0,
        dropped_datagrams: bad_datagrams + node.gossip.undecodable(),
        dropped_connections: bad_connections,
    }
}
