//! The gossip thread: runs the sans-IO cluster brain (`mos-brain`) over UDP on the same port
//! number as the migration server, feeds it this node's load and memory every second, and keeps
//! the cluster view that `mosctl status` shows.
//!
//! Not wired yet: the brain's `Migrate` decisions (automatic balancing) are logged, not executed,
//! and `Broadcast` (auto-discovery on a segment) is not sent.
use crate::Node;
use mos_brain::membership::State;
use mos_brain::node::{Config, Input, Node as Brain, Output};
use mos_proto::control::NodeStatus;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The brain and the clock it runs on, shared with the control socket.
pub struct Gossip {
    brain: Mutex<Brain>,
    start: Instant,
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
    pub fn new(number: u32, addr: IpAddr, map: &mos_proto::nodemap::NodeMap) -> Gossip {
        let mut cfg = Config::new(number, v4(addr));
        cfg.ncpus = std::thread::available_parallelism().map(|n| n.get() as u16).unwrap_or(1);
        cfg.broadcast_announce = false;
        let map: Vec<(u32, u32)> = map.nodes().iter().map(|(n, a)| (*n, u32::from(*a))).collect();
        let seed = u64::from(number).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
        Gossip { brain: Mutex::new(Brain::new(cfg, &map, seed, 0)), start: Instant::now() }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn handle(&self, input: Input) -> Vec<Output> {
        let now = self.now();
        self.brain.lock().unwrap_or_else(|p| p.into_inner()).handle(now, input)
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
        // This node's load as the cluster sees it: smoothed and speed-normalized, like the others.
        rows[0].load = f64::from(b.own_entry(now).load) / f64::from(mos_brain::load::LOAD_SCALE);
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
            rows.push(NodeStatus {
                node: n,
                address: e.as_ref().map(|e| Ipv4Addr::from(e.addr).to_string()).unwrap_or_default(),
                state: if e.is_none() && state == "up" { "unknown".into() } else { state.into() },
                ncpus: e.as_ref().map_or(0, |e| u32::from(e.ncpus)),
                load: e.as_ref().map_or(0.0, |e| f64::from(e.load) / f64::from(mos_brain::load::LOAD_SCALE)),
                mem_free: e.as_ref().map_or(0, |e| u64::from(e.mem_free_mb) << 20),
                mem_total: e.as_ref().map_or(0, |e| u64::from(e.mem_total_mb) << 20),
                procs: e.as_ref().map_or(0, |e| e.procs),
                guests: e.as_ref().map_or(0, |e| e.guests),
                age_ms: b.vector().age(n, now).unwrap_or(u64::MAX),
            });
        }
        rows.sort_by_key(|r| r.node);
        rows
    }
}

/// Runnable tasks now (from /proc/stat), in the brain's fixed point.
fn runnable() -> u32 {
    let t = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n: u32 = t.lines().find_map(|l| l.strip_prefix("procs_running ")).and_then(|v| v.trim().parse().ok()).unwrap_or(1);
    // Not counting mosd's own gossip thread, which is running while it samples.
    n.saturating_sub(1) * mos_brain::load::LOAD_SCALE
}

/// Carries out the brain's outputs; returns the earliest timer it asked for.
fn apply(sock: &UdpSocket, port: u16, outs: Vec<Output>) -> Option<u64> {
    let mut timer = None;
    for o in outs {
        match o {
            Output::Send { addr, bytes, .. } => {
                let _ = sock.send_to(&bytes, SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port));
            }
            Output::SetTimer { at } => timer = Some(timer.map_or(at, |t: u64| t.min(at))),
            Output::StateChange { node, state } => tracing::info!(node, ?state, "cluster membership changed"),
            Output::Migrate { pid, to } => tracing::debug!(pid, to, "balancer suggests a move (automatic migration is not wired yet)"),
            Output::Broadcast { .. } => {}
        }
    }
    timer
}

/// Runs the gossip loop forever on `sock`: a tick at least every 500 ms (or when the brain asks),
/// a local sample every second, and every datagram that arrives.
pub fn run(sock: UdpSocket, node: Arc<Node>) {
    let g = &node.gossip;
    let port = node.port;
    let mut next_tick = g.now();
    let mut next_sample = g.now();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = g.now();
        if now >= next_sample {
            let st = crate::status::this_node(&node);
            let outs = g.handle(Input::LocalSample {
                runnable: runnable(),
                mem_free_mb: (st.mem_free >> 20) as u32,
                mem_total_mb: (st.mem_total >> 20) as u32,
                procs: st.procs + st.guests,
                guests: st.guests,
            });
            if let Some(t) = apply(&sock, port, outs) {
                next_tick = next_tick.min(t);
            }
            next_sample = now + 1000;
        }
        if now >= next_tick {
            next_tick = now + 500;
            if let Some(t) = apply(&sock, port, g.handle(Input::Tick)) {
                next_tick = next_tick.min(t.max(now + 1));
            }
        }
        let wait = next_tick.min(next_sample).saturating_sub(g.now()).max(1);
        let _ = sock.set_read_timeout(Some(Duration::from_millis(wait)));
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let outs = g.handle(Input::Datagram { from: v4(from.ip()), bytes: buf[..n].to_vec() });
            if let Some(t) = apply(&sock, port, outs) {
                next_tick = next_tick.min(t.max(g.now() + 1));
            }
        }
    }
}
