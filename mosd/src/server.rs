//! The migration server: accepts incoming processes on TCP and hosts each as a guest on its own
//! thread (ptrace ties a tracee to the thread that traces it; the stub dies with that thread).
use crate::registry::GuestRow;
use crate::Node;
use mos_engine::guest::{self, End};
use mos_engine::migrate;
use mos_proto::deputy::ForkJoin;
use mos_proto::frame::{self, Kind};
use mos_proto::migration::{Failed, Resumed};
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
    migrate::tune(&s);
    let _ = s.set_read_timeout(Some(migrate::MIGRATION_TIMEOUT));
    let first = match mos_proto::frame::read_frame(&mut s) {
        Ok(f) => f,
        Err(e) => {
            let ip = s.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            node.guard.bad_connection(ip, &e.to_string());
            return;
        }
    };
    if first.kind == Kind::ForkJoin {
        return host_child(s, node, first, orders, inbox);
    }
    let accepted = first.expect::<mos_proto::migration::Offer>(Kind::Offer).map_err(mos_engine::Error::from).and_then(|offer| {
        let r = migrate::accept_offer(&mut s, offer, admit, None);
        let _ = s.set_read_timeout(None);
        r
    });
    let (g, stats) = match accepted {
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
    run_guest(s, node, g, stats, orders, inbox);
}

/// A connection from home that is the deputy channel of a child a guest here is forking
/// ([`mos_proto::deputy::ForkJoin`]): the guest is handed a place for the child (this thread),
/// sends it a copy of itself, and the child is hosted here as a guest of its own. Answers home
/// `Resumed` or `Failed`.
fn host_child(mut s: TcpStream, node: &Node, first: mos_proto::frame::Frame, orders: guest::Orders, inbox: guest::Inbox) {
    let join: ForkJoin = match first.decode() {
        Ok(j) => j,
        Err(e) => {
            let ip = s.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            node.guard.bad_connection(ip, &e.to_string());
            return;
        }
    };
    let fail = |s: &mut TcpStream, reason: String| {
        tracing::warn!(home = join.home_node, parent = join.parent_pid, child = join.child_pid, %reason, "forked child not made");
        let _ = frame::write_msg(s, Kind::Failed, &Failed { reason });
    };
    let Some(parent) = node.registry.guest_by_home(join.home_node, join.parent_pid) else {
        return fail(&mut s, format!("no guest here is process {} of node {}", join.parent_pid, join.home_node));
    };
    let (mut here, there) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return fail(&mut s, format!("socketpair: {e}")),
    };
    let _ = here.set_read_timeout(Some(migrate::MIGRATION_TIMEOUT));
    if parent.fork_slot(guest::ForkSlot { child_pid: join.child_pid, token: join.token, image: there }).is_err() {
        return fail(&mut s, "the forking guest is gone".into());
    }
    let (g, stats) = match migrate::accept_fork_child(&mut here) {
        Ok(x) => x,
        Err(e) => return fail(&mut s, format!("the child could not be made: {e}")),
    };
    let _ = s.set_read_timeout(None);
    if let Err(e) = frame::write_msg(&mut s, Kind::Resumed, &Resumed { remote_pid: g.pid.as_raw() as u32 }) {
        tracing::warn!(error = %e, "lost the forked child's deputy channel");
        let _ = nix::sys::signal::kill(g.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(g.pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        return;
    }
    tracing::info!(home = g.home_node, pid = g.home_pid, parent = join.parent_pid, local = g.pid.as_raw(), "forked child resumed here");
    run_guest(s, node, g, stats, orders, inbox);
}

/// Hosts a running guest until it ends or leaves.
fn run_guest(
    mut s: TcpStream,
    node: &Node,
    g: guest::Guest,
    stats: mos_proto::migration::Stats,
    orders: guest::Orders,
    inbox: guest::Inbox,
) {
    let command = mos_engine::procfs::comm(g.pid).unwrap_or_default();
    let span = tracing::info_span!("guest", home = g.home_node, pid = g.home_pid, local = g.pid.as_raw());
    let _e = span.enter();
    tracing::info!(pages = stats.pages_sent, bytes = stats.bytes_sent, ms = stats.total_us / 1000, "guest resumed here");
    node.registry.add_guest(GuestRow {
        home_node: g.home_node,
        home_pid: g.home_pid,
        local_pid: g.pid.as_raw() as u32,
        command,
        stats,
        orders: std::sync::Arc::new(orders),
        since: std::time::Instant::now(),
    });
    let end = guest::serve(&mut s, &g, &inbox);
    node.registry.remove_guest(g.pid.as_raw() as u32);
    match end {
        End::Exited(st) => tracing::info!(?st, "guest ended"),
        End::WentHome(st) => tracing::info!(frozen_ms = st.frozen_us / 1000, "guest went home"),
        End::Killed(why) => tracing::warn!(%why, "guest killed"),
    }
}
