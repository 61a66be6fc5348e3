//! The gossip thread: runs the sans-IO cluster brain (`mos-brain`) over UDP on the same port
//! number as the migration server, feeds it this node's load, memory and processes every second
//! (sample.rs), carries out its decisions (balance.rs), and keeps the cluster view that
//! `mosctl status` shows.
use crate::sample::Sampler;
use crate::Node;
use mos_brain::membership::State;
use mos_brain::node::{Config, Input, Node as Brain, Output};
use mos_brain::wire::flags;
use mos_proto::control::NodeStatus;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the runnable count is sampled between the per-second samples.
const RUNNABLE_POLL_MS: u64 = 100;

/// The node's CPU shape as announced: CPUs and per-CPU speed.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub ncpus: u16,
    pub speed: u32,
    /// Make automatic migration decisions.
    pub balance: bool,
}

/// The brain and the clock it runs on, shared with the control socket.
pub struct Gossip {
    brain: Mutex<Brain>,
    start: Instant,
    pub shape: Shape,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gossip")
    }
}

fn v4(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => 0,
    }
}

impl Gossip {
    pub fn new(number: u32, addr: IpAddr, map: &mos_proto::nodemap::NodeMap, shape: Shape, broadcast: bool) -> Gossip {
        let mut cfg = Config::new(number, v4(addr));
        cfg.ncpus = shape.ncpus;
        cfg.speed = shape.speed;
        cfg.balance = shape.balance;
        cfg.broadcast_announce = broadcast;
        let map: Vec<(u32, u32)> = map.nodes().iter().map(|(n, a)| (*n, u32::from(*a))).collect();
        let seed = u64::from(number).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
        Gossip { brain: Mutex::new(Brain::new(cfg, &map, seed, 0)), start: Instant::now(), shape }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// An instant on the brain's clock.
    fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Advertise the node's switches (`mosctl block`) in its gossip entry.
    pub fn publish_switches(&self, sw: &crate::admin::Switches) {
        let f = if sw.blocked() { flags::BLOCKED } else { 0 };
        self.brain.lock().unwrap_or_else(|p| p.into_inner()).set_flags(f);
    }

    /// Tells the other nodes this one leaves (mosd shutdown).
    pub fn leave(&self, sock: &UdpSocket, port: u16) {
        let outs = {
            let mut b = self.brain.lock().unwrap_or_else(|p| p.into_inner());
            b.set_flags(flags::LEAVING | flags::BLOCKED);
            b.handle(self.now(), Input::Leave)
        };
        for o in outs {
            if let Output::Send { addr, bytes, .. } = o {
                let _ = sock.send_to(&bytes, SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port));
            }
        }
    }

    fn handle(&self, input: Input) -> Vec<Output> {
        let now = self.now();
        self.brain.lock().unwrap_or_else(|p| p.into_inner()).handle(now, input)
    }

    /// Datagrams the brain could not decode.
    pub fn undecodable(&self) -> u64 {
        self.brain.lock().unwrap_or_else(|p| p.into_inner()).stats.bad
    }

    /// A node and its address by number or address, from the map or learned by gossip (nodes
    /// that joined by auto-discovery are not in the map).
    pub fn resolve(&self, map: &mos_proto::nodemap::NodeMap, name: &str) -> Option<(u32, Ipv4Addr)> {
        if let Some(r) = map.resolve(name) {
            return Some(r);
        }
        let b = self.brain.lock().unwrap_or_else(|p| p.into_inner());
        let m = b.membership();
        let known = |n: u32| m.state(n) != State::None && m.addr(n) != 0;
        if let Ok(n) = name.parse::<u32>() {
            return known(n).then(|| (n, Ipv4Addr::from(m.addr(n))));
        }
        let a: Ipv4Addr = name.parse().ok()?;
        m.members().iter().copied().find(|n| known(*n) && m.addr(*n) == u32::from(a)).map(|n| (n, a))
    }

    /// Opportunity-cost placement (`mosrun -b`) among the nodes this node knows are up.
    pub fn best_node(&self, mem_mb: u32) -> u32 {
        self.brain.lock().unwrap_or_else(|p| p.into_inner()).best_node(mem_mb)
    }

    /// Every node of the cluster as this node sees it; `this` is this node's own row.
    pub fn view(&self, this: NodeStatus) -> Vec<NodeStatus> {
        let now = self.now();
        let b = self.brain.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = vec![this];
        // This node as the cluster sees it: smoothed, speed-normalized load, the shape and memory
        // of its cgroup when it has one, like the others.
        let own = b.own_entry(now);
        rows[0].load = f64::from(own.load) / f64::from(mos_brain::load::LOAD_SCALE);
        rows[0].ncpus = u32::from(own.ncpus);
        rows[0].speed = own.speed;
        rows[0].mem_free = u64::from(own.mem_free_mb) << 20;
        rows[0].mem_total = u64::from(own.mem_total_mb) << 20;
        for &n in b.membership().members() {
            if n == rows[0].node {
                continue;
            }
            let state = match b.membership().state(n) {
                State::Up => "up",
                State::Suspect => "suspect",
                State::Down => "down",
                State::Left => "left",
                State::None => continue,
            };
            let slot = b.vector().get(n);
            let e = slot.map(|s| s.entry);
            let state = match e {
                None if state == "up" => "unknown",
                Some(e) if state == "up" && e.flags & flags::LEAVING != 0 => "leaving",
                Some(e) if state == "up" && e.flags & flags::BLOCKED != 0 => "blocked",
                _ => state,
            };
            rows.push(NodeStatus {
                node: n,
                address: e.as_ref().map(|e| Ipv4Addr::from(e.addr).to_string()).unwrap_or_default(),
                state: state.into(),
                ncpus: e.as_ref().map_or(0, |e| u32::from(e.ncpus)),
                speed: e.as_ref().map_or(0, |e| e.speed),
                load: e.as_ref().map_or(0.0, |e| f64::from(e.load) / f64::from(mos_brain::load::LOAD_SCALE)),
                mem_free: e.as_ref().map_or(0, |e| u64::from(e.mem_free_mb) << 20),
                mem_total: e.as_ref().map_or(0, |e| u64::from(e.mem_total_mb) << 20),
                procs: e.as_ref().map_or(0, |e| e.procs),
                guests: e.as_ref().map_or(0, |e| e.guests),
                age_ms: b.vector().age(n, now).unwrap_or(u64::MAX),
                dropped_datagrams: 0,
                dropped_connections: 0,
            });
        }
        rows.sort_by_key(|r| r.node);
        rows
    }
}

/// Carries out the brain's outputs; returns the earliest timer it asked for.
fn apply(sock: &UdpSocket, node: &Arc<Node>, outs: Vec<Output>) -> Option<u64> {
    let port = node.port;
    let mut timer = None;
    for o in outs {
        match o {
            Output::Send { addr, bytes, .. } => {
                let _ = sock.send_to(&node.guard.outgoing(bytes), SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port));
            }
            Output::SetTimer { at } => timer = Some(timer.map_or(at, |t: u64| t.min(at))),
            Output::StateChange { node, state } => tracing::info!(node, ?state, "cluster membership changed"),
            Output::Migrate { pid, to, why } => crate::balance::execute(node, pid, to, why),
            Output::Broadcast { bytes } => {
                if let Some(b) = node.broadcast {
                    let _ = sock.send_to(&node.guard.outgoing(bytes), SocketAddr::new(IpAddr::V4(b), port));
                }
            }
        }
    }
    timer
}

/// One datagram from `from`: checked by the guard (cluster key), then fed to the brain.
fn receive(node: &Node, from: SocketAddr, d: &[u8]) -> Vec<Output> {
    let Some(body) = node.guard.incoming(from.ip(), d) else { return Vec::new() };
    node.gossip.handle(Input::Datagram { from: v4(from.ip()), bytes: body.to_vec() })
}

/// Auto-discovery: receives the datagrams broadcast on the segment (a socket bound to a unicast
/// address does not get them) and feeds them to the brain; answers go out through `send`.
pub fn listen_broadcast(recv: UdpSocket, send: UdpSocket, node: Arc<Node>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match recv.recv_from(&mut buf) {
            Ok((n, from)) => {
                let outs = receive(&node, from, &buf[..n]);
                apply(&send, &node, outs);
            }
            Err(e) => {
                tracing::warn!(error = %e, "broadcast socket failed; auto-discovery stops");
                return;
            }
        }
    }
}

/// Runs the gossip loop forever on `sock`: a tick at least every 500 ms (or when the brain asks),
/// a local sample every second, and every datagram that arrives.
pub fn run(sock: UdpSocket, node: Arc<Node>, mut sampler: Sampler) {
    let g = &node.gossip;
    let mut next_tick = g.now();
    let mut next_sample = g.now();
    let mut next_poll = g.now();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = g.now();
        if now >= next_poll {
            sampler.poll_runnable();
            next_poll = now + RUNNABLE_POLL_MS;
        }
        if now >= next_sample {
            let (mem_free, mem_total) = sampler.memory();
            let (procs, guests) = node.registry.counts();
            let sw = &node.admin;
            let locals = node.registry.locals(node.number);
            let list = sampler.procs(&locals, |l| l.auto && !sw.stay() && (l.guest || !sw.lstay()), |t| g.ms_at(t));
            g.handle(Input::ProcessList(list));
            let outs = g.handle(Input::LocalSample {
                runnable: sampler.take_runnable(),
                mem_free_mb: (mem_free >> 20) as u32,
                mem_total_mb: (mem_total >> 20) as u32,
                procs: procs + guests,
                guests,
            });
            if let Some(t) = apply(&sock, &node, outs) {
                next_tick = next_tick.min(t);
            }
            next_sample = now + 1000;
        }
        if now >= next_tick {
            next_tick = now + 500;
            if let Some(t) = apply(&sock, &node, g.handle(Input::Tick)) {
                next_tick = next_tick.min(t.max(now + 1));
            }
        }
        let wait = next_tick.min(next_sample).min(next_poll).saturating_sub(g.now()).max(1);
        let _ = sock.set_read_timeout(Some(Duration::from_millis(wait)));
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let outs = receive(&node, from, &buf[..n]);
            if let Some(t) = apply(&sock, &node, outs) {
                next_tick = next_tick.min(t.max(g.now() + 1));
            }
        }
    }
}
