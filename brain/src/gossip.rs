//! The Amar–Barak–Drezner–Okun window gossip (gossimon's "mindead" variant).
//!
//! Each node keeps a vector with one entry per node. Every step it refreshes its own entry
//! (age 0) and pushes the `w` newest entries of its vector to one random node. Ages, not
//! absolute times, travel: an entry received with age `a` at local time `t` is stored with the
//! local creation estimate `created = t - a`, so its age at any later local time `now` is
//! `now - created` ("age at receipt + time since"); no global clock is needed.

use crate::rng::Rng;
use crate::wire::Entry;

/// Largest node number accepted (the vector is indexed by node number).
pub const MAX_NODE: u32 = 65_535;
/// An entry whose creation estimate is this much younger than the stored one replaces it even if
/// its `origin_ms` is smaller (the origin restarted with a new clock).
pub const RESTART_SLACK_MS: i64 = 1_000;
const NONE: i64 = i64::MIN;

/// One vector slot.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The entry as last received (its `age_ms` is the age at receipt).
    pub entry: Entry,
    /// Local time at which the entry was created at its origin, as estimated here.
    pub created: i64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        entry: Entry {
            node: 0,
            addr: 0,
            origin_ms: 0,
            age_ms: 0,
            load: 0,
            speed: 0,
            ncpus: 0,
            mem_free_mb: 0,
            mem_total_mb: 0,
            procs: 0,
            guests: 0,
            flags: 0,
        },
        created: NONE,
    };

    /// Whether the slot holds an entry.
    pub fn known(&self) -> bool {
        self.created != NONE
    }
}

/// Result of merging one received entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Node number out of range, or our own entry.
    Ignored,
    /// We already had this information or newer.
    Older,
    /// Stored; `first` when this node was not known before.
    Newer {
        /// First entry ever about this node.
        first: bool,
    },
}

/// The information vector, with the `w` newest entries tracked incrementally.
#[derive(Clone, Debug)]
pub struct Vector {
    me: u32,
    window: usize,
    slots: Vec<Slot>,
    known: usize,
    /// Candidates for the window: `(created, node)`; contains the `window` newest valid entries
    /// (a pair is valid while the slot's `created` equals it; creation times only grow).
    recent: Vec<(i64, u32)>,
}

impl Vector {
    /// An empty vector for node `me`, sending windows of `window` entries.
    pub fn new(me: u32, window: usize) -> Self {
        Vector { me, window: window.max(1), slots: Vec::new(), known: 0, recent: Vec::new() }
    }

    /// Window size.
    pub fn window_size(&self) -> usize {
        self.window
    }

    /// Number of known entries (including our own).
    pub fn known(&self) -> usize {
        self.known
    }

    /// The slot of `node`, if known.
    pub fn get(&self, node: u32) -> Option<&Slot> {
        self.slots.get(node as usize).filter(|s| s.known())
    }

    /// Age of `node`'s entry at local time `now`.
    pub fn age(&self, node: u32, now: u64) -> Option<u64> {
        self.get(node).map(|s| (now as i64 - s.created).max(0) as u64)
    }

    /// All known slots.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.known())
    }

    fn slot_mut(&mut self, node: u32) -> &mut Slot {
        let i = node as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, Slot::EMPTY);
        }
        &mut self.slots[i]
    }

    fn store(&mut self, entry: Entry, created: i64) -> bool {
        let slot = self.slot_mut(entry.node);
        let first = !slot.known();
        // Creation times of one node strictly grow, so (created, node) pairs are unique.
        let created = if first { created } else { created.max(slot.created + 1) };
        *slot = Slot { entry, created };
        if first {
            self.known += 1;
        }
        self.recent.push((created, entry.node));
        first
    }

    /// Our own fresh entry (age 0).
    pub fn refresh_self(&mut self, mut entry: Entry, now: u64) {
        entry.node = self.me;
        entry.age_ms = 0;
        self.store(entry, now as i64);
    }

    /// Keep the newer of the stored and the received entry (`e.age_ms` = age when sent).
    pub fn merge(&mut self, e: &Entry, now: u64) -> Merge {
        if e.node == 0 || e.node > MAX_NODE || e.node == self.me {
            return Merge::Ignored;
        }
        let created = now as i64 - i64::from(e.age_ms);
        if let Some(cur) = self.get(e.node) {
            let newer = e.origin_ms > cur.entry.origin_ms || created > cur.created + RESTART_SLACK_MS;
            if !newer {
                return Merge::Older;
            }
        }
        let first = self.store(*e, created);
        Merge::Newer { first }
    }

    /// Forget `node` entirely (its entry can be learned again).
    pub fn forget(&mut self, node: u32) {
        if let Some(s) = self.slots.get_mut(node as usize) {
            if s.known() {
                *s = Slot::EMPTY;
                self.known -= 1;
                // Rebuild the candidates: the entry that now enters the window may be anywhere.
                self.recent = self.iter().map(|s| (s.created, s.entry.node)).collect();
            }
        }
    }

    /// The `w` newest entries, ages set for sending at `now`.
    pub fn window(&mut self, now: u64) -> Vec<Entry> {
        let slots = &self.slots;
        self.recent.retain(|&(c, n)| slots.get(n as usize).is_some_and(|s| s.created == c));
        if self.recent.len() > self.window {
            let w = self.window;
            self.recent.select_nth_unstable_by(w - 1, |a, b| b.0.cmp(&a.0));
            self.recent.truncate(w);
        }
        self.recent
            .iter()
            .map(|&(c, n)| {
                let mut e = self.slots[n as usize].entry;
                e.age_ms = u32::try_from((now as i64 - c).max(0)).unwrap_or(u32::MAX);
                e
            })
            .collect()
    }
}

/// Gossimon's "mindead" target choice: usually a random alive node; on every
/// `max(any_cycle_min, alive)`-th step any node of the map, so dead nodes get probed now and then.
///
/// `pick_alive` draws a random alive node (or `None`), `pick_any` a random member of any state.
pub fn choose_target<R: Rng>(
    step: u64,
    alive: usize,
    any_cycle_min: usize,
    rng: &mut R,
    mut pick_alive: impl FnMut(&mut R) -> Option<u32>,
    mut pick_any: impl FnMut(&mut R) -> Option<u32>,
) -> Option<u32> {
    let cycle = any_cycle_min.max(alive).max(1) as u64;
    if step % cycle == 0 {
        pick_any(rng).or_else(|| pick_alive(rng))
    } else {
        pick_alive(rng).or_else(|| pick_any(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(node: u32, origin_ms: u64, age_ms: u32) -> Entry {
        Entry { node, origin_ms, age_ms, ..Entry::default() }
    }

    #[test]
    fn keeps_the_newer_entry_and_tracks_age_without_a_global_clock() {
        let mut v = Vector::new(1, 4);
        assert_eq!(v.merge(&e(2, 5_000, 300), 10_000), Merge::Newer { first: true });
        assert_eq!(v.age(2, 10_500), Some(800));
        // An older copy (smaller origin time) is ignored.
        assert_eq!(v.merge(&e(2, 4_500, 100), 10_600), Merge::Older);
        assert_eq!(v.merge(&e(2, 5_500, 0), 10_600), Merge::Newer { first: false });
        assert_eq!(v.age(2, 10_700), Some(100));
        // The origin restarted (clock reset) and its entry is clearly younger: taken.
        assert_eq!(v.merge(&e(2, 10, 0), 13_000), Merge::Newer { first: false });
        assert_eq!(v.merge(&e(1, 99, 0), 13_000), Merge::Ignored);
    }

    #[test]
    fn window_is_the_w_newest() {
        let mut v = Vector::new(1, 3);
        for n in 2..=20u32 {
            v.merge(&e(n, 1, 1000 - n * 10), 1000);
        }
        v.refresh_self(Entry::default(), 1000);
        let mut w: Vec<u32> = v.window(1000).iter().map(|e| e.node).collect();
        w.sort();
        assert_eq!(w, vec![1, 19, 20]);
        v.merge(&e(5, 2, 0), 1001);
        let mut w: Vec<u32> = v.window(1001).iter().map(|e| e.node).collect();
        w.sort();
        assert_eq!(w, vec![1, 5, 20]);
        v.forget(5);
        let mut w: Vec<u32> = v.window(1001).iter().map(|e| e.node).collect();
        w.sort();
        assert_eq!(w, vec![1, 19, 20]);
    }
}
