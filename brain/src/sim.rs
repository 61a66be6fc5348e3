//! A deterministic simulator: N [`Node`]s in virtual time, every datagram encoded and decoded by
//! the real codec, with message loss, partitions, crashes and restarts, and a seeded RNG. Each
//! node has its own clock (a random offset from virtual time), so no global clock is assumed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::membership::State;
use crate::node::{Config, Input, Node, Output};
use crate::rng::{Rng, XorShift64};

/// Simulation parameters.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Nodes, numbered 1..=n, address `0x0a00_0000 + number`.
    pub n: usize,
    /// RNG seed.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Transit time, ms.
    pub latency_ms: u64,
    /// All nodes tick at the same instants (the synchronous model of the closed forms);
    /// otherwise each node has a random phase within the step.
    pub sync: bool,
    /// Template for every node (`me`/`addr` replaced).
    pub node: Config,
}

impl SimConfig {
    /// `n` nodes, window `w`, no loss, 1 ms latency, random phases.
    pub fn new(n: usize, w: usize, seed: u64) -> Self {
        let mut node = Config::new(0, 0);
        node.window = w;
        node.broadcast_announce = false;
        SimConfig { n, seed, loss: 0.0, latency_ms: 1, sync: false, node }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(usize),
    Deliver { to: usize, from: u32, bytes: Vec<u8> },
}

/// Counters over a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Of which lost (loss, partition or dead receiver).
    pub dropped: u64,
    /// Bytes handed to the network.
    pub bytes: u64,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    /// Virtual time, ms.
    pub now: u64,
    nodes: Vec<Node>,
    up: Vec<bool>,
    offset: Vec<u64>,
    timer: Vec<u64>,
    group: Vec<u32>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    rng: XorShift64,
    /// Counters.
    pub stats: SimStats,
    /// `(virtual time, observer, node, state)` for every state change.
    pub changes: Vec<(u64, u32, u32, State)>,
    /// `(virtual time, node, pid, to)` for every migration ordered.
    pub migrations: Vec<(u64, u32, u32, u32)>,
}

/// Address of node number `n`.
pub fn addr_of(n: u32) -> u32 {
    0x0a00_0000 + n
}

impl Sim {
    /// Start `cfg.n` nodes at virtual time 0.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = XorShift64::new(cfg.seed);
        let map: Vec<(u32, u32)> = (1..=cfg.n as u32).map(|n| (n, addr_of(n))).collect();
        let mut s = Sim {
            cfg,
            now: 0,
            nodes: Vec::with_capacity(cfg.n),
            up: vec![true; cfg.n],
            offset: (0..cfg.n).map(|_| rng.below(1 << 40)).collect(),
            timer: vec![0; cfg.n],
            group: vec![0; cfg.n],
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            stats: SimStats::default(),
            changes: Vec::new(),
            migrations: Vec::new(),
        };
        for i in 0..cfg.n {
            let node = s.make_node(i, &map);
            s.nodes.push(node);
            let phase = if cfg.sync { 0 } else { s.rng.below(cfg.node.step_ms) };
            s.schedule_tick(i, phase);
        }
        s
    }

    fn make_node(&mut self, i: usize, map: &[(u32, u32)]) -> Node {
        let mut c = self.cfg.node;
        c.me = i as u32 + 1;
        c.addr = addr_of(c.me);
        let seed = self.rng.next_u64();
        Node::new(c, map, seed, self.now + self.offset[i])
    }

    fn schedule_tick(&mut self, i: usize, at: u64) {
        self.timer[i] = at;
        self.push(at, Ev::Tick(i));
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Node `i` (0-based; node number `i + 1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Whether node `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    /// Node `i`'s local clock now.
    pub fn local_now(&self, i: usize) -> u64 {
        self.now + self.offset[i]
    }

    /// Feed an input to node `i` now.
    pub fn input(&mut self, i: usize, input: Input) {
        let t = self.local_now(i);
        let out = self.nodes[i].handle(t, input);
        self.apply(i, out);
    }

    /// Crash node `i` (it stops; datagrams to it are lost).
    pub fn kill(&mut self, i: usize) {
        self.up[i] = false;
    }

    /// Restart node `i` with empty state.
    pub fn restart(&mut self, i: usize) {
        let map: Vec<(u32, u32)> = (1..=self.cfg.n as u32).map(|n| (n, addr_of(n))).collect();
        self.nodes[i] = self.make_node(i, &map);
        self.up[i] = true;
        let at = self.now;
        self.schedule_tick(i, at);
    }

    /// Partition: nodes in different groups cannot talk.
    pub fn partition(&mut self, group: impl Fn(usize) -> u32) {
        self.group = (0..self.cfg.n).map(group).collect();
    }

    /// Remove any partition.
    pub fn heal(&mut self) {
        self.group = vec![0; self.cfg.n];
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.stats.sent += 1;
        self.stats.bytes += bytes.len() as u64;
        if to >= self.cfg.n || !self.up[to] || self.group[to] != self.group[from] || self.rng.unit() < self.cfg.loss {
            self.stats.dropped += 1;
            return;
        }
        let at = self.now + self.cfg.latency_ms;
        self.push(at, Ev::Deliver { to, from: addr_of(from as u32 + 1), bytes });
    }

    fn apply(&mut self, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { addr, bytes, .. } => {
                    let to = addr.wrapping_sub(addr_of(1)) as usize;
                    self.transmit(i, to, bytes);
                }
                Output::Broadcast { bytes } => {
                    for to in 0..self.cfg.n {
                        if to != i {
                            self.transmit(i, to, bytes.clone());
                        }
                    }
                }
                Output::SetTimer { at } => {
                    let vt = at.saturating_sub(self.offset[i]).max(self.now);
                    self.schedule_tick(i, vt);
                }
                Output::Migrate { pid, to, .. } => self.migrations.push((self.now, i as u32 + 1, pid, to)),
                Output::StateChange { node, state } => self.changes.push((self.now, i as u32 + 1, node, state)),
            }
        }
    }

    /// Run every event up to and including virtual time `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else { break };
            self.now = at;
            match ev {
                Ev::Tick(i) => {
                    if self.up[i] && self.timer[i] == at {
                        self.input(i, Input::Tick);
                    }
                }
                Ev::Deliver { to, from, bytes } => {
                    if self.up[to] {
                        self.input(to, Input::Datagram { from, bytes });
                    }
                }
            }
        }
        self.now = t;
    }

    /// True age (ms, virtual) of node `j`'s entry as held by node `i`, if held.
    pub fn true_age(&self, i: usize, j: usize) -> Option<u64> {
        let s = self.nodes[i].vector().get(j as u32 + 1)?;
        let created_virtual = s.entry.origin_ms.checked_sub(self.offset[j])?;
        Some(self.now.saturating_sub(created_virtual))
    }

    /// Average and maximum true age over all pairs of distinct running nodes (unknown entries
    /// are skipped), and how many pairs were unknown.
    pub fn ages(&self) -> (f64, u64, usize) {
        let (mut sum, mut cnt, mut max, mut unknown) = (0u128, 0u64, 0u64, 0usize);
        for i in (0..self.cfg.n).filter(|&i| self.up[i]) {
            for j in (0..self.cfg.n).filter(|&j| j != i && self.up[j]) {
                match self.true_age(i, j) {
                    Some(a) => {
                        sum += u128::from(a);
                        cnt += 1;
                        max = max.max(a);
                    }
                    None => unknown += 1,
                }
            }
        }
        (if cnt == 0 { 0.0 } else { sum as f64 / cnt as f64 }, max, unknown)
    }

    /// Pairs (observer, node) of running nodes where the observer has no entry yet.
    pub fn unknown_pairs(&self) -> usize {
        let alive = self.up.iter().filter(|u| **u).count();
        (0..self.cfg.n).filter(|&i| self.up[i]).map(|i| alive.saturating_sub(self.nodes[i].vector().known())).sum()
    }

    /// The simulator's RNG (for choosing sampling instants).
    pub fn rng(&mut self) -> &mut XorShift64 {
        &mut self.rng
    }
}
