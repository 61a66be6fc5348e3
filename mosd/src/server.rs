//! The migration server: accepts incoming processes on TCP and hosts each as a guest on its own
//! thread (ptrace ties a tracee to the thread that traces it; the stub dies with that thread).
//! A connection brings either a migrating process (`Offer`) or the deputy channel of a child that
//! a guest here is forking (`ForkJoin`).
use crate::registry::GuestRow;
use crate::Node;
use mos_engine::channel::Channel;
use mos_engine::guest::{self, End};
use mos_engine::{channel, migrate};
use mos_proto::deputy::{ForkJoin, LaneJoin};
use mos_proto::frame::{self, Kind};
use mos_proto::migration::{Failed, Resumed, Stats};
use mos_proto::secure::Ticket;
use std::net::{IpAddr, TcpListener, TcpStream};
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
    let ip = s.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
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
    let (orders, inbox) = match guest::orders() {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot create a guest's order channel; connection dropped");
            return;
        }
    };
    let orders = Arc::new(orders);
    migrate::tune(s.tcp());
    let _ = s.set_read_timeout(Some(migrate::MIGRATION_TIMEOUT));
    let first = match frame::read_frame(&mut s) {
        Ok(f) => f,
        Err(e) => {
            // Not a MOS stream: dropped, counted, logged at a limited rate.
            node.guard.bad_connection(ip, &e.to_string());
            return;
        }
    };
    if first.kind == Kind::ForkJoin {
        return host_child(s, node, ip, first, ticket, orders, inbox);
    }
    if first.kind == Kind::LaneJoin {
        return join_lane(s, node, ip, &first);
    }
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
    // Listed here before `Resumed` goes out: home reports the move done when it reads it.
    let listed = std::cell::Cell::new(None);
    let list = |g: &guest::Guest, stats: &Stats| {
        list_guest(node, g, stats, &orders);
        listed.set(Some(g.pid.as_raw() as u32));
    };
    let result = first
        .expect::<mos_proto::migration::Offer>(Kind::Offer)
        .map_err(mos_engine::Error::from)
        .and_then(|offer| migrate::accept_offer(&mut s, offer, admit, list, None));
    let _ = s.set_read_timeout(None);
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
    run_guest(s, node, g, &stats, &inbox);
}

/// Lists a guest in the registry (before home is told it runs here).
fn list_guest(node: &Node, g: &guest::Guest, stats: &Stats, orders: &Arc<guest::Orders>) {
    node.registry.add_guest(GuestRow {
        home_node: g.home_node,
        home_pid: g.home_pid,
        local_pid: g.pid.as_raw() as u32,
        command: mos_engine::procfs::comm(g.pid).unwrap_or_default(),
        stats: stats.clone(),
        orders: orders.clone(),
        since: std::time::Instant::now(),
    });
}

/// A connection from home that is the deputy channel of a child a guest here is forking
/// ([`mos_proto::deputy::ForkJoin`]): the guest is handed a place for the child (this thread),
/// sends it a copy of itself, and the child is hosted here as a guest of its own. Answers home
/// `Resumed` or `Failed`. With a cluster key the connection's ticket must name the parent's home
/// node and owner; the join's token (sent home on the parent's own channel) names the fork.
fn host_child(
    mut s: Channel,
    node: &Node,
    ip: IpAddr,
    first: mos_proto::frame::Frame,
    ticket: Option<Ticket>,
    orders: Arc<guest::Orders>,
    inbox: guest::Inbox,
) {
    let join: ForkJoin = match first.decode() {
        Ok(j) => j,
        Err(e) => {
            node.guard.bad_connection(ip, &e.to_string());
            return;
        }
    };
    let fail = |s: &mut Channel, reason: String| {
        tracing::warn!(home = join.home_node, parent = join.parent_pid, child = join.child_pid, %reason, "forked child not made");
        let _ = frame::write_msg(s, Kind::Failed, &Failed { reason });
    };
    let Some((parent_local, parent)) = node.registry.guest_by_home(join.home_node, join.parent_pid) else {
        return fail(&mut s, format!("no guest here is process {} of node {}", join.parent_pid, join.home_node));
    };
    if let Some(t) = ticket {
        let owner = mos_engine::procfs::status(nix::unistd::Pid::from_raw(parent_local as i32)).map(|st| st.uid).ok();
        if t.node != join.home_node || owner != Some(t.uid) {
            let why = format!(
                "a fork join for process {} of node {} (owner {owner:?}) on a ticket of uid {} node {}",
                join.parent_pid, join.home_node, t.uid, t.node
            );
            node.guard.bad_connection(ip, &why);
            return fail(&mut s, why);
        }
    }
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
    list_guest(node, &g, &stats, &orders);
    if let Err(e) = frame::write_msg(&mut s, Kind::Resumed, &Resumed { remote_pid: g.pid.as_raw() as u32 }) {
        tracing::warn!(error = %e, "lost the forked child's deputy channel");
        node.registry.remove_guest(g.pid.as_raw() as u32);
        let _ = nix::sys::signal::kill(g.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(g.pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        return;
    }
    tracing::info!(home = g.home_node, pid = g.home_pid, parent = join.parent_pid, local = g.pid.as_raw(), "forked child resumed here");
    run_guest(s, node, g, &stats, &inbox);
}

/// A connection from home that is the kernel lane of a guest here ([`LaneJoin`]): handed to that
/// guest, which gives it to the module if the token is the one it offered. Only on a cluster
/// without a key (the lane carries no encryption; a guest never offers it otherwise).
fn join_lane(s: Channel, node: &Node, ip: IpAddr, first: &mos_proto::frame::Frame) {
    let join: LaneJoin = match first.decode() {
        Ok(j) => j,
        Err(e) => return node.guard.bad_connection(ip, &e.to_string()),
    };
    let Channel::Plain(stream) = s else {
        return node.guard.bad_connection(ip, "a kernel lane on an encrypted connection");
    };
    let Some((_, guest)) = node.registry.guest_by_home(join.home_node, join.home_pid) else {
        tracing::warn!(home = join.home_node, pid = join.home_pid, "a kernel lane for no guest here; dropped");
        return;
    };
    let _ = stream.set_read_timeout(None);
    if guest.lane(guest::LaneSlot { token: join.token, stream }).is_err() {
        tracing::warn!(home = join.home_node, pid = join.home_pid, "the guest ended before its kernel lane came; dropped");
    }
}

/// Hosts a running guest (already listed) until it ends or leaves.
fn run_guest(mut s: Channel, node: &Node, g: guest::Guest, stats: &Stats, inbox: &guest::Inbox) {
    let span = tracing::info_span!("guest", home = g.home_node, pid = g.home_pid, local = g.pid.as_raw());
    let _e = span.enter();
    tracing::info!(pages = stats.pages_sent, bytes = stats.bytes_sent, ms = stats.total_us / 1000, "guest resumed here");
    let end = guest::serve(&mut s, &g, inbox);
    node.registry.remove_guest(g.pid.as_raw() as u32);
    match end {
        End::Exited(st) => tracing::info!(?st, "guest ended"),
        End::WentHome(st) => tracing::info!(frozen_ms = st.frozen_us / 1000, "guest went home"),
        End::Killed(why) => tracing::warn!(%why, "guest killed"),
    }
}
