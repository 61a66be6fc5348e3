//! The node state machine: `handle(now, input) -> outputs`, no I/O inside.

use std::collections::BTreeMap;

use crate::balance::{self, BalanceConfig, NodeView, ProcView};
use crate::gossip::{self, Merge, Vector};
use crate::load::{self, LoadAverager, ProcCpu};
use crate::membership::{DetectConfig, Membership, State};
use crate::rng::XorShift64;
use crate::theory;
use crate::wire::{self, Entry, Message};

/// Node parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Our node number.
    pub me: u32,
    /// Our IPv4 address.
    pub addr: u32,
    /// Gossip step (gossimon default 500 ms).
    pub step_ms: u64,
    /// Window: entries per gossip datagram (≤ [`wire::MAX_ENTRIES`]).
    pub window: usize,
    /// Every `max(any_cycle_min, alive)` steps the target is any member (gossimon: 5).
    pub any_cycle_min: usize,
    /// Suspect age; `None` = `max(min_suspect_ms, 3 × expected maximal age × step)`.
    pub suspect_after_ms: Option<u64>,
    /// Lower bound of the automatic suspect age.
    pub min_suspect_ms: u64,
    /// Unanswered probes before Down.
    pub probe_attempts: u8,
    /// Copies of each probe sent per tick (loss tolerance).
    pub probe_copies: u8,
    /// Members checked per tick.
    pub scan_budget: usize,
    /// Re-announce period.
    pub reannounce_ms: u64,
    /// Also announce by broadcast on the local segment (auto-discovery).
    pub broadcast_announce: bool,
    /// CPU speed.
    pub speed: u32,
    /// CPUs.
    pub ncpus: u16,
    /// Automatic balancing on.
    pub balance: bool,
    /// Balancing parameters.
    pub balancing: BalanceConfig,
}

impl Config {
    /// Defaults for node `me` at `addr`.
    pub fn new(me: u32, addr: u32) -> Self {
        Config {
            me,
            addr,
            step_ms: 500,
            window: 20,
            any_cycle_min: 5,
            suspect_after_ms: None,
            min_suspect_ms: 5_000,
            probe_attempts: 5,
            probe_copies: 2,
            scan_budget: 256,
            reannounce_ms: 30_000,
            broadcast_announce: true,
            speed: load::STD_SPEED,
            ncpus: 1,
            balance: true,
            balancing: BalanceConfig::default(),
        }
    }

    /// The suspect age used for a cluster of `n` nodes.
    pub fn suspect_after(&self, n: usize) -> u64 {
        if let Some(s) = self.suspect_after_ms {
            return s;
        }
        let w = self.window.min(n.saturating_sub(1));
        let max_age = theory::expected_ages(n, w).map_or(2.0, |(_, m)| m);
        self.min_suspect_ms.max((3.0 * max_age * self.step_ms as f64).ceil() as u64)
    }

    /// Upper bound on the time from a node's death to its `Down` here, for a cluster of `n`:
    /// suspect age + (probe attempts + 1) steps + the scan delay (ignoring transit times).
    pub fn detection_bound_ms(&self, n: usize) -> u64 {
        let scan_steps = n.div_ceil(self.scan_budget.max(1)) as u64;
        self.suspect_after(n) + (u64::from(self.probe_attempts) + scan_steps) * self.step_ms
    }
}

/// How long a move we made counts in the target's view (its smoothed load needs about this long
/// to show a new process: (5/8)^4 ≈ 15 % left to rise after 4 samples).
pub const SENT_HOLD_MS: u64 = 4_000;

/// A process sample from the daemon.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// Home pid.
    pub pid: u32,
    /// CPU use over the last sample, [`load::LOAD_SCALE`] = one CPU.
    pub cpu: u32,
    /// Memory used or declared, MiB.
    pub mem_mb: u32,
    /// May be moved automatically.
    pub migratable: bool,
    /// Local time it arrived here, if it is a guest or came back.
    pub arrived_ms: Option<u64>,
}

/// Inputs.
#[derive(Clone, Debug)]
pub enum Input {
    /// The timer asked for by [`Output::SetTimer`] fired (early ticks are harmless).
    Tick,
    /// A datagram arrived from `from` (IPv4).
    Datagram {
        /// Source address.
        from: u32,
        /// Payload.
        bytes: Vec<u8>,
    },
    /// Local measurement (every second).
    LocalSample {
        /// Runnable processes averaged over the last second, [`load::LOAD_SCALE`] per process.
        runnable: u32,
        /// Free memory, MiB.
        mem_free_mb: u32,
        /// Total memory, MiB.
        mem_total_mb: u32,
        /// Processes here.
        procs: u32,
        /// Of which guests.
        guests: u32,
    },
    /// The local migratable processes.
    ProcessList(Vec<ProcSample>),
    /// Leave the cluster (announce it).
    Leave,
}

/// Outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram to node `to` at `addr`.
    Send {
        /// Node number.
        to: u32,
        /// IPv4 address.
        addr: u32,
        /// Datagram.
        bytes: Vec<u8>,
    },
    /// Broadcast a datagram on the local segment.
    Broadcast {
        /// Datagram.
        bytes: Vec<u8>,
    },
    /// Move process `pid` to node `to`.
    Migrate {
        /// Home pid.
        pid: u32,
        /// Target node.
        to: u32,
        /// Which rule decided it.
        why: Why,
    },
    /// Call `handle(at, Tick)` at local time `at`.
    SetTimer {
        /// Local time.
        at: u64,
    },
    /// A member changed state.
    StateChange {
        /// Node number.
        node: u32,
        /// New state.
        state: State,
    },
}

/// Why the balancer moves a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Memory ushering: this node is short of free memory.
    Memory,
    /// Load balancing (including slow → fast).
    Load,
}

/// Per-node counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Datagrams refused by the decoder.
    pub bad: u64,
}

/// One node's brain.
#[derive(Clone, Debug)]
pub struct Node {
    cfg: Config,
    vector: Vector,
    members: Membership,
    rng: XorShift64,
    load: LoadAverager,
    mem_free_mb: u32,
    mem_total_mb: u32,
    procs_here: u32,
    guests: u32,
    flags: u8,
    procs: BTreeMap<u32, (ProcCpu, ProcSample)>,
    moved: BTreeMap<u32, u64>,
    /// Load and memory we just sent to a node, counted in its view until its own gossip has had
    /// time to show them (its smoothed load rises over a few seconds): node → (load, MiB, until).
    sent: BTreeMap<u32, (u32, u32, u64)>,
    step: u64,
    next_tick: u64,
    next_announce: u64,
    seq: u32,
    sized_for: usize,
    /// Counters.
    pub stats: Stats,
}

impl Node {
    /// A node with the MOSIX map `(node, addr)`, its own RNG seed, started at local time `now`.
    pub fn new(cfg: Config, map: &[(u32, u32)], seed: u64, now: u64) -> Self {
        let detect = DetectConfig {
            suspect_after_ms: cfg.suspect_after(map.len().max(2)),
            probe_attempts: cfg.probe_attempts,
            scan_budget: cfg.scan_budget,
        };
        let members = Membership::new(cfg.me, map, detect, now);
        let mut n = Node {
            vector: Vector::new(cfg.me, cfg.window.clamp(1, wire::MAX_ENTRIES)),
            sized_for: members.members().len() + 1,
            members,
            rng: XorShift64::new(seed),
            load: LoadAverager::default(),
            mem_free_mb: 0,
            mem_total_mb: 0,
            procs_here: 0,
            guests: 0,
            flags: 0,
            procs: BTreeMap::new(),
            moved: BTreeMap::new(),
            sent: BTreeMap::new(),
            step: 0,
            next_tick: now,
            next_announce: now,
            seq: 0,
            stats: Stats::default(),
            cfg,
        };
        n.refresh(now);
        n
    }

    /// Parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The information vector.
    pub fn vector(&self) -> &Vector {
        &self.vector
    }

    /// The member table.
    pub fn membership(&self) -> &Membership {
        &self.members
    }

    /// Set the [`wire::flags`] advertised in our entry.
    pub fn set_flags(&mut self, flags: u8) {
        self.flags = flags;
    }

    /// Our current entry (age 0).
    pub fn own_entry(&self, now: u64) -> Entry {
        Entry {
            node: self.cfg.me,
            addr: self.cfg.addr,
            origin_ms: now,
            age_ms: 0,
            load: self.load.get(),
            speed: self.cfg.speed,
            ncpus: self.cfg.ncpus,
            mem_free_mb: self.mem_free_mb,
            mem_total_mb: self.mem_total_mb,
            procs: self.procs_here,
            guests: self.guests,
            flags: self.flags,
        }
    }

    fn refresh(&mut self, now: u64) {
        let e = self.own_entry(now);
        self.vector.refresh_self(e, now);
    }

    fn send(&mut self, out: &mut Vec<Output>, to: u32, msg: &Message) {
        let addr = self.members.addr(to);
        if let Ok(bytes) = wire::encode(msg) {
            self.stats.sent += 1;
            self.stats.bytes += bytes.len() as u64;
            out.push(Output::Send { to, addr, bytes });
        }
    }

    fn resize(&mut self) {
        let n = self.members.members().len() + 1;
        if n != self.sized_for {
            self.sized_for = n;
            self.members.cfg.suspect_after_ms = self.cfg.suspect_after(n);
        }
    }

    /// Feed one input at local time `now`.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(now, &mut out),
            Input::Datagram { bytes, .. } => match wire::decode(&bytes) {
                Ok(m) => self.receive(now, m, &mut out),
                Err(_) => self.stats.bad += 1,
            },
            Input::LocalSample { runnable, mem_free_mb, mem_total_mb, procs, guests } => {
                self.load.update(load::normalize(runnable, self.cfg.speed, self.cfg.ncpus));
                self.mem_free_mb = mem_free_mb;
                self.mem_total_mb = mem_total_mb;
                self.procs_here = procs;
                self.guests = guests;
                if self.cfg.balance {
                    self.decide(now, &mut out);
                }
            }
            Input::ProcessList(list) => {
                let mut next = BTreeMap::new();
                for p in list {
                    let mut avg = self.procs.get(&p.pid).map(|x| x.0).unwrap_or_default();
                    avg.update(p.cpu);
                    next.insert(p.pid, (avg, p));
                }
                self.procs = next;
                let procs = &self.procs;
                self.moved.retain(|pid, _| procs.contains_key(pid));
            }
            Input::Leave => {
                let msg = Message::Leave { node: self.cfg.me, addr: self.cfg.addr };
                for to in self.members.members().to_vec() {
                    if self.members.state(to).alive() {
                        self.send(&mut out, to, &msg);
                    }
                }
            }
        }
        out
    }

    fn tick(&mut self, now: u64, out: &mut Vec<Output>) {
        if now < self.next_tick {
            out.push(Output::SetTimer { at: self.next_tick });
            return;
        }
        self.step += 1;
        self.refresh(now);
        // Gossip: the window to one random node.
        let alive = self.members.alive_count();
        let members = &self.members;
        let target = gossip::choose_target(
            self.step,
            alive,
            self.cfg.any_cycle_min,
            &mut self.rng,
            |r| members.random_alive(r),
            |r| members.random_any(r),
        );
        if let Some(to) = target {
            let entries = self.vector.window(now);
            self.send(out, to, &Message::Gossip { from: self.cfg.me, entries });
        }
        // Failure detection.
        let d = self.members.tick(now, &self.vector);
        for (node, state) in d.changes {
            out.push(Output::StateChange { node, state });
        }
        for (node, _) in d.probe {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            for _ in 0..self.cfg.probe_copies.max(1) {
                self.send(out, node, &Message::Probe { from: self.cfg.me, seq });
            }
        }
        // Announce (startup and periodically) so that isolated or new nodes heal.
        if now >= self.next_announce {
            self.next_announce = now + self.cfg.reannounce_ms;
            let msg = Message::Join { entry: self.own_entry(now) };
            if let Some(to) = self.members.random_any(&mut self.rng) {
                self.send(out, to, &msg);
            }
            if self.cfg.broadcast_announce {
                if let Ok(bytes) = wire::encode(&msg) {
                    out.push(Output::Broadcast { bytes });
                }
            }
        }
        self.next_tick = (self.next_tick + self.cfg.step_ms).max(now + 1);
        out.push(Output::SetTimer { at: self.next_tick });
    }

    fn heard(&mut self, node: u32, out: &mut Vec<Output>) {
        if let Some((node, state)) = self.members.heard(node) {
            out.push(Output::StateChange { node, state });
        }
    }

    fn learn(&mut self, now: u64, e: &Entry, out: &mut Vec<Output>) {
        if let Merge::Newer { first } = self.vector.merge(e, now) {
            if first && self.members.add(e.node, e.addr, false) {
                self.resize();
            }
            if u64::from(e.age_ms) < self.members.cfg.suspect_after_ms {
                self.heard(e.node, out);
            }
        }
    }

    fn receive(&mut self, now: u64, msg: Message, out: &mut Vec<Output>) {
        match msg {
            Message::Gossip { from, entries } => {
                self.heard(from, out);
                for e in &entries {
                    self.learn(now, e, out);
                }
            }
            Message::Probe { from, seq } => {
                self.heard(from, out);
                self.refresh(now);
                let entry = self.own_entry(now);
                self.send(out, from, &Message::Ack { from: self.cfg.me, seq, entry });
            }
            Message::Ack { from, entry, .. } => {
                self.learn(now, &entry, out);
                self.heard(from, out);
            }
            Message::Join { entry } => {
                if entry.node == self.cfg.me {
                    return;
                }
                if self.members.add(entry.node, entry.addr, false) {
                    self.resize();
                }
                self.learn(now, &entry, out);
                self.heard(entry.node, out);
                // Welcome it with our newest entries.
                let entries = self.vector.window(now);
                self.send(out, entry.node, &Message::Gossip { from: self.cfg.me, entries });
            }
            Message::Leave { node, .. } => {
                if let Some((node, state)) = self.members.left(node) {
                    out.push(Output::StateChange { node, state });
                }
            }
        }
    }

    /// Our own view for the decisions.
    pub fn local_view(&self) -> NodeView {
        NodeView {
            node: self.cfg.me,
            load: self.load.get(),
            speed: self.cfg.speed,
            ncpus: self.cfg.ncpus,
            mem_free_mb: self.mem_free_mb,
            mem_total_mb: self.mem_total_mb,
        }
    }

    /// Up members that accept guests, from their entries.
    pub fn candidates(&self) -> Vec<NodeView> {
        self.vector
            .iter()
            .filter(|s| {
                s.entry.node != self.cfg.me
                    && self.members.state(s.entry.node) == State::Up
                    && s.entry.flags & (wire::flags::BLOCKED | wire::flags::LEAVING | wire::flags::FROZEN) == 0
            })
            .map(|s| {
                let (load, mem, _) = self.sent.get(&s.entry.node).copied().unwrap_or_default();
                NodeView {
                    node: s.entry.node,
                    load: s.entry.load.saturating_add(load),
                    speed: s.entry.speed,
                    ncpus: s.entry.ncpus,
                    mem_free_mb: s.entry.mem_free_mb.saturating_sub(mem),
                    mem_total_mb: s.entry.mem_total_mb,
                }
            })
            .collect()
    }

    fn proc_views(&self) -> Vec<ProcView> {
        self.procs
            .values()
            .map(|(avg, p)| ProcView {
                pid: p.pid,
                load: avg.get(),
                mem_mb: p.mem_mb,
                migratable: p.migratable,
                // A process we just sent away (or that just arrived) is held.
                arrived_ms: self.moved.get(&p.pid).copied().max(p.arrived_ms),
            })
            .collect()
    }

    fn decide(&mut self, now: u64, out: &mut Vec<Output>) {
        self.sent.retain(|_, (_, _, until)| *until > now);
        if self.procs.is_empty() {
            return;
        }
        let local = self.local_view();
        let procs = self.proc_views();
        let cands = self.candidates();
        let cfg = self.cfg.balancing;
        let mut moves: Vec<(u32, u32, Why)> =
            balance::usher(&local, &procs, &cands, now, &cfg).into_iter().map(|(p, t)| (p, t, Why::Memory)).collect();
        if moves.is_empty() {
            moves.extend(balance::balance(&local, &procs, &cands, now, &cfg).map(|(p, t)| (p, t, Why::Load)));
        }
        for (pid, to, why) in moves {
            let (cpu, mem) = self.procs.get(&pid).map_or((0, 0), |(a, p)| (a.get(), p.mem_mb));
            self.load.discount(load::normalize(cpu, self.cfg.speed, self.cfg.ncpus));
            if let Some(t) = cands.iter().find(|c| c.node == to) {
                let e = self.sent.entry(to).or_insert((0, 0, 0));
                e.0 = e.0.saturating_add(balance::added_load(cpu, t) as u32);
                e.1 = e.1.saturating_add(mem);
                e.2 = now + SENT_HOLD_MS;
            }
            self.moved.insert(pid, now);
            out.push(Output::Migrate { pid, to, why });
        }
    }

    /// Initial placement for `mosrun -b`: the node of least marginal opportunity cost (ourselves
    /// included) for a job needing `mem_mb`.
    pub fn best_node(&self, mem_mb: u32) -> u32 {
        let mut nodes = self.candidates();
        nodes.push(self.local_view());
        balance::place(&nodes, mem_mb, &self.cfg.balancing).unwrap_or(self.cfg.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_entry(node: u32, now: u64) -> Entry {
        Entry {
            node,
            addr: 0x7f00_0000 + node,
            origin_ms: now,
            age_ms: 0,
            load: 0,
            speed: load::STD_SPEED,
            ncpus: 1,
            mem_free_mb: 4096,
            mem_total_mb: 8192,
            procs: 0,
            guests: 0,
            flags: 0,
        }
    }

    /// Eight CPU-bound processes on node 1, three idle peers whose gossip does not change (as when
    /// their smoothed load has not risen yet): the moves spread over the peers instead of piling
    /// onto the one that looked idlest, and stop once the peers look as loaded as node 1 will be.
    #[test]
    fn moves_count_in_the_target_view_until_its_gossip_shows_them() {
        let map: Vec<(u32, u32)> = (1..=4).map(|n| (n, 0x7f00_0000 + n)).collect();
        let mut node = Node::new(Config::new(1, 0x7f00_0001), &map, 7, 0);
        let mut targets = Vec::new();
        for sec in 1..=8u64 {
            let now = sec * 1000;
            for peer in 2..=4 {
                let bytes = wire::encode(&Message::Gossip { from: peer, entries: vec![peer_entry(peer, now)] }).unwrap();
                node.handle(now, Input::Datagram { from: 0x7f00_0000 + peer, bytes });
            }
            let procs = (1..=8).filter(|p| !targets.iter().any(|(q, _)| q == p)).map(|pid| ProcSample {
                pid,
                cpu: load::LOAD_SCALE,
                mem_mb: 10,
                migratable: true,
                arrived_ms: None,
            });
            node.handle(now, Input::ProcessList(procs.collect()));
            let runnable = (8 - targets.len() as u32) * load::LOAD_SCALE;
            for o in node.handle(now, Input::LocalSample { runnable, mem_free_mb: 4096, mem_total_mb: 8192, procs: 8, guests: 0 }) {
                if let Output::Migrate { pid, to, .. } = o {
                    targets.push((pid, to));
                }
            }
        }
        let per_node = |n: u32| targets.iter().filter(|(_, t)| *t == n).count();
        assert!(targets.len() >= 3, "moves: {targets:?}");
        assert!((2..=4).all(|n| per_node(n) >= 1), "every idle peer gets a process: {targets:?}");
        assert!((2..=4).all(|n| per_node(n) <= 3), "no peer gets more than its share: {targets:?}");
    }
}
