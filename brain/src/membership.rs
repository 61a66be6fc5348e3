//! Membership and failure detection.
//!
//! The MOSIX map is authoritative; nodes that announce themselves (Join) are added as discovered
//! members. A member is `Suspect` when its entry is older than `suspect_after_ms`, then probed
//! directly once per step (Probe → Ack); after `probe_attempts` unanswered probes it is `Down`.
//! Anything received from a node (or a fresh entry about it) makes it `Up` again. An announced
//! Leave makes it `Left`.

use crate::gossip::{Vector, MAX_NODE};
use crate::rng::Rng;

/// A member's state as seen here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Not a member.
    #[default]
    None,
    /// Alive.
    Up,
    /// Entry too old; being probed.
    Suspect,
    /// Declared dead.
    Down,
    /// Announced its departure.
    Left,
}

impl State {
    /// `Up` or `Suspect`: still a gossip target.
    pub fn alive(self) -> bool {
        matches!(self, State::Up | State::Suspect)
    }

    /// Lower-case name, as `mosctl status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            State::None => "none",
            State::Up => "up",
            State::Suspect => "suspect",
            State::Down => "down",
            State::Left => "left",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    state: State,
    in_map: bool,
    probes: u8,
    addr: u32,
}

/// Failure-detection parameters.
#[derive(Clone, Copy, Debug)]
pub struct DetectConfig {
    /// Entry age after which a member is suspected.
    pub suspect_after_ms: u64,
    /// Unanswered probes (one per tick) before `Down`.
    pub probe_attempts: u8,
    /// Members whose age is checked per tick (bounded work per step at large N).
    pub scan_budget: usize,
}

/// The member table.
#[derive(Clone, Debug)]
pub struct Membership {
    me: u32,
    peers: Vec<Peer>,
    members: Vec<u32>,
    alive: usize,
    suspects: Vec<u32>,
    scan_pos: usize,
    /// When we started expecting entries from map members we have never heard of.
    started: u64,
    /// Parameters.
    pub cfg: DetectConfig,
}

/// What a tick of the detector asks for.
#[derive(Debug, Default)]
pub struct Detect {
    /// Members to probe now.
    pub probe: Vec<(u32, u32)>,
    /// State changes `(node, new state)`.
    pub changes: Vec<(u32, State)>,
}

impl Membership {
    /// A table with the map `(node, addr)` (ourselves included or not), started at `now`.
    pub fn new(me: u32, map: &[(u32, u32)], cfg: DetectConfig, now: u64) -> Self {
        let mut m =
            Membership { me, peers: Vec::new(), members: Vec::new(), alive: 0, suspects: Vec::new(), scan_pos: 0, started: now, cfg };
        for &(n, a) in map {
            m.add(n, a, true);
        }
        m
    }

    fn peer_mut(&mut self, node: u32) -> &mut Peer {
        let i = node as usize;
        if i >= self.peers.len() {
            self.peers.resize(i + 1, Peer::default());
        }
        &mut self.peers[i]
    }

    /// Add a member (map or discovered). Returns true if it is new.
    pub fn add(&mut self, node: u32, addr: u32, in_map: bool) -> bool {
        if node == 0 || node > MAX_NODE || node == self.me {
            return false;
        }
        let p = self.peer_mut(node);
        p.in_map |= in_map;
        if addr != 0 {
            p.addr = addr;
        }
        if p.state != State::None {
            return false;
        }
        p.state = State::Up;
        self.members.push(node);
        self.alive += 1;
        true
    }

    /// State of `node`.
    pub fn state(&self, node: u32) -> State {
        self.peers.get(node as usize).map_or(State::None, |p| p.state)
    }

    /// Address of `node` (0 if unknown).
    pub fn addr(&self, node: u32) -> u32 {
        self.peers.get(node as usize).map_or(0, |p| p.addr)
    }

    /// Whether `node` comes from the map.
    pub fn in_map(&self, node: u32) -> bool {
        self.peers.get(node as usize).is_some_and(|p| p.in_map)
    }

    /// Members other than ourselves.
    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// Number of `Up`/`Suspect` members (ourselves excluded).
    pub fn alive_count(&self) -> usize {
        self.alive
    }

    fn set(&mut self, node: u32, state: State) -> Option<(u32, State)> {
        let p = self.peer_mut(node);
        let old = p.state;
        if old == state || old == State::None {
            return None;
        }
        p.state = state;
        p.probes = 0;
        match (old.alive(), state.alive()) {
            (true, false) => self.alive -= 1,
            (false, true) => self.alive += 1,
            _ => {}
        }
        if old == State::Suspect {
            self.suspects.retain(|&s| s != node);
        }
        if state == State::Suspect {
            self.suspects.push(node);
        }
        Some((node, state))
    }

    /// We heard from `node` directly (or a fresh entry about it): it is `Up`.
    pub fn heard(&mut self, node: u32) -> Option<(u32, State)> {
        match self.state(node) {
            State::Up | State::None => None,
            _ => self.set(node, State::Up),
        }
    }

    /// `node` announced it is leaving.
    pub fn left(&mut self, node: u32) -> Option<(u32, State)> {
        self.set(node, State::Left)
    }

    /// A random alive member.
    pub fn random_alive<R: Rng>(&self, rng: &mut R) -> Option<u32> {
        if self.alive == 0 {
            return None;
        }
        for _ in 0..16 {
            let n = self.members[rng.below(self.members.len() as u64) as usize];
            if self.state(n).alive() {
                return Some(n);
            }
        }
        let alive: Vec<u32> = self.members.iter().copied().filter(|&n| self.state(n).alive()).collect();
        alive.get(rng.below(alive.len() as u64) as usize).copied()
    }

    /// A random member of any state.
    pub fn random_any<R: Rng>(&self, rng: &mut R) -> Option<u32> {
        if self.members.is_empty() {
            None
        } else {
            Some(self.members[rng.below(self.members.len() as u64) as usize])
        }
    }

    /// One detector tick at local time `now`: suspect members with old entries (up to
    /// `scan_budget` of them checked per tick, round robin), probe suspects, declare `Down` those
    /// that did not answer `probe_attempts` probes.
    pub fn tick(&mut self, now: u64, vector: &Vector) -> Detect {
        let mut out = Detect::default();
        // Suspects first: they were probed on previous ticks.
        for node in self.suspects.clone() {
            let attempts = self.cfg.probe_attempts;
            let p = self.peer_mut(node);
            if p.probes >= attempts {
                out.changes.extend(self.set(node, State::Down));
            } else {
                p.probes += 1;
                out.probe.push((node, p.addr));
            }
        }
        let n = self.members.len();
        for _ in 0..self.cfg.scan_budget.min(n) {
            self.scan_pos = (self.scan_pos + 1) % n;
            let node = self.members[self.scan_pos];
            if self.state(node) != State::Up {
                continue;
            }
            let age = vector.age(node, now).unwrap_or(now.saturating_sub(self.started));
            if age > self.cfg.suspect_after_ms {
                out.changes.extend(self.set(node, State::Suspect));
                let p = self.peer_mut(node);
                p.probes = 1;
                out.probe.push((node, p.addr));
            }
        }
        out
    }
}
