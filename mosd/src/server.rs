//! The migration server: accepts incoming processes on TCP and hosts each as a guest on its own
//! thread (ptrace ties a tracee to the thread that traces it; the stub dies with that thread).
use crate::registry::GuestRow;
use crate::Node;
use mos_engine::guest::{self, End};
use mos_engine::{channel, migrate};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub fn accept_loop(l: TcpListener, node: Arc<Node>) {
    for conn in l.incoming() {
        match conn {
            Ok(s) => {
                let n = node.clone();
                let _ = std::thread::Builder::new().name("guest".into()).spawn(move || host(s, &n));
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

/// Connections in their secure handshake at once, at most (beyond: dropped and counted).
const MAX_HANDSHAKES: usize = 64;
static HANDSHAKES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_HANDSHAKES`] slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        HANDSHAKES.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_HANDSHAKES).then_some(n + 1)).ok().map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        HANDSHAKES.fetch_sub(1, Ordering::AcqRel);
    }
}

fn host(s: TcpStream, node: &Node) {
    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let ip = s.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    // With a cluster key, nothing is read but a ticket and a handshake (at most 10 s, at most
    // MAX_HANDSHAKES at once) until the peer proved it.
    let Some(slot) = Slot::take() else {
        node.guard.bad_connection(ip, &format!("more than {MAX_HANDSHAKES} connections in their handshake"));
        return;
    };
    let (mut s, ticket) = match channel::accept(s, node.guard.key()) {
        Ok(x) => x,
        Err(e) => {
            node.guard.bad_connection(ip, &format!("secure handshake failed: {e}"));
            return;
        }
    };
    drop(slot);
    tracing::info!(%peer, secure = s.is_secure(), "receiving a process");
    let admit = |o: &mos_proto::migration::Offer| {
        if let Some(t) = ticket.filter(|t| (t.uid, t.gid, t.node) != (o.uid, o.gid, o.home_node)) {
            let why = format!(
                "the offer (uid {}, gid {}, home node {}) does not match its connection's ticket (uid {}, gid {}, node {})",
                o.uid, o.gid, o.home_node, t.uid, t.gid, t.node
            );
            node.guard.bad_connection(ip, &why);
            return Err(why);
        }
        if node.admin.blocked() {
            Err(format!("node {} accepts no guests (mosctl block)", node.number))
        } else {
            Ok(())
        }
    };
    let (orders, inbox) = match guest::orders() {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot create a guest's order channel; connection dropped");
            return;
        }
    };
    // Listed here before `Resumed` goes out: home reports the move done when it reads it.
    let orders = std::sync::Arc::new(orders);
    let listed = std::cell::Cell::new(None);
    let list = |g: &guest::Guest, stats: &mos_proto::migration::Stats| {
        node.registry.add_guest(GuestRow {
            home_node: g.home_node,
            home_pid: g.home_pid,
            local_pid: g.pid.as_raw() as u32,
            command: mos_engine::procfs::comm(g.pid).unwrap_or_default(),
            stats: stats.clone(),
            orders: orders.clone(),
            since: std::time::Instant::now(),
        });
        listed.set(Some(g.pid.as_raw() as u32));
    };
    let result = migrate::accept_guest_with(&mut s, admit, list);
    if let (Err(_), Some(local)) = (&result, listed.get()) {
        node.registry.remove_guest(local);
    }
    let (g, stats) = match result {
        Ok(x) => x,
        Err(e @ mos_engine::Error::Proto(_)) => {
            // Not a migration stream (or a broken one): dropped, counted, logged at a limited rate.
            node.guard.bad_connection(ip, &e.to_string());
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "incoming migration failed; the process stays where it was");
            return;
        }
    };
    let span = tracing::info_span!("guest", home = g.home_node, pid = g.home_pid, local = g.pid.as_raw());
    let _e = span.enter();
    tracing::info!(pages = stats.pages_sent, bytes = stats.bytes_sent, ms = stats.total_us / 1000, "guest resumed here");
    let end = guest::serve(&mut s, &g, &inbox);
    node.registry.remove_guest(g.pid.as_raw() as u32);
    match end {
        End::Exited(st) => tracing::info!(?st, "guest ended"),
        End::WentHome(st) => tracing::info!(frozen_ms = st.frozen_us / 1000, "guest went home"),
        End::Killed(why) => tracing::warn!(%why, "guest killed"),
    }
}
