//! Node administration, MOSIX style: the stay/lstay/block switches, and expel/bring/shutdown,
//! which move processes through the same paths as `mosctl migrate` and the guests' order channels.
use crate::Node;
use mos_engine::guest::Order;
use mos_proto::control::{AdminOp, Reply, Target};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long expel, bring and shutdown wait for the processes to move.
const MOVE_WAIT: Duration = Duration::from_secs(120);

/// The node's switches.
#[derive(Debug, Default)]
pub struct Switches {
    stay: AtomicBool,
    lstay: AtomicBool,
    block: AtomicBool,
}

impl Switches {
    /// No automatic migration away from here at all.
    pub fn stay(&self) -> bool {
        self.stay.load(Ordering::Relaxed)
    }
    /// No automatic migration of own processes away from here.
    pub fn lstay(&self) -> bool {
        self.lstay.load(Ordering::Relaxed)
    }
    /// No new guests.
    pub fn blocked(&self) -> bool {
        self.block.load(Ordering::Relaxed)
    }
}

/// Carries out `op` (the caller checked that the requester is root).
pub fn run(node: &Node, op: AdminOp) -> Reply {
    let sw = &node.admin;
    let set = |b: &AtomicBool, v: bool| {
        b.store(v, Ordering::Relaxed);
        Reply::Ok
    };
    let r = match op {
        AdminOp::Stay => set(&sw.stay, true),
        AdminOp::NoStay => set(&sw.stay, false),
        AdminOp::LStay => set(&sw.lstay, true),
        AdminOp::NoLStay => set(&sw.lstay, false),
        AdminOp::Block => set(&sw.block, true),
        AdminOp::NoBlock => set(&sw.block, false),
        AdminOp::Expel => expel(node),
        AdminOp::Bring => bring(node),
        AdminOp::Shutdown => {
            sw.block.store(true, Ordering::Relaxed);
            match (expel(node), bring(node)) {
                (Reply::Ok, Reply::Ok) => Reply::Ok,
                (Reply::Error { message }, _) | (_, Reply::Error { message }) => Reply::Error { message },
                (other, _) => other,
            }
        }
    };
    node.gossip.publish_switches(sw);
    tracing::info!(?op, "admin command done");
    r
}

/// Stops the daemon: no new guests, every guest sent home (waited for), a `Leave` announced by
/// gossip, exit 0. Own processes keep running where they are (their deputies live in mosrun).
pub fn stop(node: &Node) -> ! {
    node.admin.block.store(true, Ordering::Relaxed);
    node.gossip.publish_switches(&node.admin);
    if let Reply::Error { message } = expel(node) {
        tracing::error!(%message, "some guests could not be sent home");
    }
    if let Some(sock) = node.leave.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        node.gossip.leave(sock, node.port);
    }
    tracing::info!("mosd stopped");
    std::process::exit(0);
}

/// Sends every guest home and waits until none is left.
fn expel(node: &Node) -> Reply {
    for o in node.registry.all_guest_orders() {
        let _ = o.send(Order::GoHome);
    }
    let deadline = Instant::now() + MOVE_WAIT;
    loop {
        let (_, guests) = node.registry.counts();
        if guests == 0 {
            return Reply::Ok;
        }
        if Instant::now() > deadline {
            return Reply::Error { message: format!("{guests} guest(s) did not leave within {} s", MOVE_WAIT.as_secs()) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Brings every own process home and waits for all of them.
fn bring(node: &Node) -> Reply {
    let waits: Vec<_> =
        node.registry.away(node.number).into_iter().map(|pid| (pid, node.registry.command_migrate(pid, Target::Home, 0))).collect();
    let mut failed = Vec::new();
    for (pid, w) in waits {
        let r = w.and_then(|rx| rx.recv_timeout(MOVE_WAIT).map_err(|_| "no answer".to_string()).and_then(|r| r));
        if let Err(e) = r {
            failed.push(format!("{pid}: {e}"));
        }
    }
    if failed.is_empty() {
        Reply::Ok
    } else {
        Reply::Error { message: format!("could not bring home {}", failed.join("; ")) }
    }
}
