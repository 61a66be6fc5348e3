//! Carries out the brain's automatic migration decisions: an own process at home is moved like
//! `mosctl migrate` would move it; a guest is handed back to its home with the target, through its
//! order channel (its home recalls it and sends it on).
use crate::Node;
use mos_brain::node::Why;
use mos_engine::guest::Order;
use mos_proto::control::Mode;
use std::sync::Arc;
use std::time::Duration;

/// How long an automatic move may take before it is reported as failed.
const MOVE_WAIT: Duration = Duration::from_secs(600);

/// Moves the process whose pid on this node is `pid` to node `to`.
pub fn execute(node: &Arc<Node>, pid: u32, to: u32, why: Why) {
    if let Some(orders) = node.registry.guest_orders(pid) {
        tracing::info!(local_pid = pid, to, ?why, "balancer: moving a guest on");
        if let Err(e) = orders.send(Order::MoveTo(to)) {
            tracing::debug!(error = %e, "the guest ended before it could be moved");
        }
        return;
    }
    if !node.registry.is_home_here(pid, node.number) {
        return;
    }
    let target = match crate::control::resolve(node, &to.to_string()) {
        Ok(t) => t,
        Err(e) => return tracing::warn!(pid, to, error = %e, "balancer chose a node not in the map"),
    };
    // Memory ushering freezes at once (stop-and-copy): the node is short of memory, and a process
    // left running through pre-copy rounds keeps growing and may be killed by the OOM killer
    // before it is moved. Load balancing has time, so it moves live (pre-copy).
    let mode = match why {
        Why::Memory => Mode::StopCopy,
        Why::Load => Mode::PreCopy,
    };
    let rx = match node.registry.command_migrate_mode(pid, target, mode, 0) {
        Ok(rx) => rx,
        Err(e) => return tracing::debug!(pid, error = %e, "the process is gone"),
    };
    tracing::info!(pid, to, ?why, ?mode, "balancer: moving a process");
    let _ = std::thread::Builder::new().name("auto-migrate".into()).spawn(move || match rx.recv_timeout(MOVE_WAIT) {
        Ok(Ok(st)) => tracing::info!(pid, to, frozen_ms = st.frozen_us / 1000, "automatic migration done"),
        Ok(Err(e)) => tracing::warn!(pid, to, error = %e, "automatic migration failed; the process stays"),
        Err(_) => tracing::warn!(pid, to, "no answer about an automatic migration"),
    });
}
