//! The migration server: accepts incoming processes on TCP and hosts each as a guest on its own
//! thread (ptrace ties a tracee to the thread that traces it; the stub dies with that thread).
use crate::registry::GuestRow;
use crate::Node;
use mos_engine::guest::{self, End};
use mos_engine::migrate;
use std::net::{TcpListener, TcpStream};
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

fn host(mut s: TcpStream, node: &Node) {
    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%peer, "receiving a process");
    let admit = |_: &mos_proto::migration::Offer| {
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
            let ip = s.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
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
