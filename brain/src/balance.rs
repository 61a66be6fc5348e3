//! Decisions: the MOSIX balancing rule, memory ushering, slow→fast, and opportunity-cost
//! initial placement (Amir et al.). Pure functions over a snapshot.

use crate::load::{LOAD_SCALE, STD_SPEED};

/// The anti-ping-pong margin of the MOSIX rule: 1.3 processes (Kerrighed's stab_factor 130 %).
pub const STAB_NUM: u64 = 13;
/// Denominator of [`STAB_NUM`].
pub const STAB_DEN: u64 = 10;

/// A node as the decisions see it (from its gossip entry, or our own state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node number.
    pub node: u32,
    /// Smoothed, speed-normalized load.
    pub load: u32,
    /// CPU speed.
    pub speed: u32,
    /// CPUs.
    pub ncpus: u16,
    /// Free memory, MiB.
    pub mem_free_mb: u32,
    /// Total memory, MiB.
    pub mem_total_mb: u32,
}

/// A local process as the decisions see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcView {
    /// Home pid.
    pub pid: u32,
    /// CPU use EWMA, [`LOAD_SCALE`] = one full CPU.
    pub load: u32,
    /// Memory it uses or declared (`mosrun -m`), MiB.
    pub mem_mb: u32,
    /// Allowed to move (`mosrun -l`, not `-L`, not `stay`).
    pub migratable: bool,
    /// Local time it arrived here (or was started), if known.
    pub arrived_ms: Option<u64>,
}

/// CPU use (EWMA) from which a process counts as CPU-bound: 75 % of a CPU.
pub const CPU_BOUND: u32 = LOAD_SCALE * 3 / 4;

/// Balancing parameters.
#[derive(Clone, Copy, Debug)]
pub struct BalanceConfig {
    /// A process that arrived less than this ago is not moved again (no ping-pong).
    pub hold_ms: u64,
    /// Free memory below which processes are ushered away, MiB.
    pub usher_below_mb: u32,
    /// Memory a target must keep free beyond the process, MiB.
    pub mem_reserve_mb: u32,
    /// Normalized load at which a CPU counts as fully used in the opportunity cost (processes per
    /// standard CPU).
    pub cpu_full: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig { hold_ms: 20_000, usher_below_mb: 64, mem_reserve_mb: 32, cpu_full: 4 }
    }
}

/// Normalized load that `proc_load` (runnable fraction) adds to `node`.
pub fn added_load(proc_load: u32, node: &NodeView) -> u64 {
    let cap = u64::from(node.speed.max(1)) * u64::from(node.ncpus.max(1));
    u64::from(proc_load) * u64::from(STD_SPEED) / cap
}

fn eligible(p: &ProcView, now: u64, cfg: &BalanceConfig) -> bool {
    p.migratable && p.arrived_ms.is_none_or(|a| now.saturating_sub(a) >= cfg.hold_ms)
}

/// The process to consider: the second-heaviest eligible one (the heaviest if it is alone).
pub fn pick_process(procs: &[ProcView], now: u64, cfg: &BalanceConfig) -> Option<ProcView> {
    let mut v: Vec<ProcView> = procs.iter().copied().filter(|p| eligible(p, now, cfg) && p.load > 0).collect();
    v.sort_by(|a, b| b.load.cmp(&a.load).then(a.pid.cmp(&b.pid)));
    match v.len() {
        0 => None,
        1 => Some(v[0]),
        _ => Some(v[1]),
    }
}

/// The MOSIX rule: the candidate minimizing `load + 1.3 × added_load` (ties: the faster node),
/// among those with room for the process's memory, if that is below the local load.
pub fn choose_target(local: &NodeView, proc: &ProcView, candidates: &[NodeView], cfg: &BalanceConfig) -> Option<(u32, u64)> {
    let mut best: Option<(u64, u32, u32)> = None;
    for c in candidates {
        if c.node == local.node || c.mem_free_mb < proc.mem_mb.saturating_add(cfg.mem_reserve_mb) {
            continue;
        }
        let cost = u64::from(c.load) + added_load(proc.load, c) * STAB_NUM / STAB_DEN;
        let better = match best {
            None => true,
            Some((bc, bs, _)) => cost < bc || (cost == bc && c.speed > bs),
        };
        if better {
            best = Some((cost, c.speed, c.node));
        }
    }
    best.filter(|&(cost, _, _)| cost < u64::from(local.load)).map(|(cost, _, node)| (node, cost))
}

/// One balancing decision: which process goes where, if any.
pub fn balance(local: &NodeView, procs: &[ProcView], candidates: &[NodeView], now: u64, cfg: &BalanceConfig) -> Option<(u32, u32)> {
    let p = pick_process(procs, now, cfg)?;
    // Not overloaded (no more runnable processes than CPUs): the only gain would be speed, which
    // is worth a move only for CPU-bound processes (slow → fast).
    let one_per_cpu = u64::from(LOAD_SCALE) * u64::from(STD_SPEED) / u64::from(local.speed.max(1));
    if u64::from(local.load) <= one_per_cpu && p.load < CPU_BOUND {
        return None;
    }
    choose_target(local, &p, candidates, cfg).map(|(node, _)| (p.pid, node))
}

/// Memory ushering: while free memory is below `usher_below_mb`, move eligible processes
/// (largest memory first) to the least-loaded nodes that can hold them and stay above the
/// threshold themselves. Returns `(pid, node)` moves.
pub fn usher(local: &NodeView, procs: &[ProcView], candidates: &[NodeView], now: u64, cfg: &BalanceConfig) -> Vec<(u32, u32)> {
    let mut moves = Vec::new();
    if local.mem_free_mb >= cfg.usher_below_mb {
        return moves;
    }
    let mut free = local.mem_free_mb;
    let mut cands: Vec<NodeView> = candidates.iter().copied().filter(|c| c.node != local.node).collect();
    let mut v: Vec<ProcView> = procs.iter().copied().filter(|p| eligible(p, now, cfg) && p.mem_mb > 0).collect();
    v.sort_by(|a, b| b.mem_mb.cmp(&a.mem_mb).then(a.pid.cmp(&b.pid)));
    for p in v {
        if free >= cfg.usher_below_mb {
            break;
        }
        let need = p.mem_mb.saturating_add(cfg.mem_reserve_mb).saturating_add(cfg.usher_below_mb);
        let target = cands
            .iter_mut()
            .filter(|c| c.mem_free_mb >= need)
            .min_by_key(|c| (u64::from(c.load) + added_load(p.load, c), std::cmp::Reverse(c.mem_free_mb), c.node));
        if let Some(t) = target {
            t.mem_free_mb -= p.mem_mb;
            t.load = t.load.saturating_add(added_load(p.load, t) as u32);
            free = free.saturating_add(p.mem_mb);
            moves.push((p.pid, t.node));
        }
    }
    moves
}

/// Marginal opportunity cost of putting one CPU-bound job needing `mem_mb` on `node`, in a
/// cluster of `n` nodes: Σ over resources of `n^(u + Δu) − n^u` (Amir et al.). `None` if the
/// memory does not fit.
pub fn marginal_cost(node: &NodeView, mem_mb: u32, n: usize, cfg: &BalanceConfig) -> Option<f64> {
    if node.mem_free_mb < mem_mb {
        return None;
    }
    let base = (n.max(2)) as f64;
    let full = f64::from(LOAD_SCALE) * f64::from(cfg.cpu_full.max(1));
    let u_cpu = f64::from(node.load) / full;
    let d_cpu = added_load(LOAD_SCALE, node) as f64 / full;
    let total = f64::from(node.mem_total_mb.max(1));
    let u_mem = f64::from(node.mem_total_mb.saturating_sub(node.mem_free_mb)) / total;
    let d_mem = f64::from(mem_mb) / total;
    Some(base.powf(u_cpu + d_cpu) - base.powf(u_cpu) + base.powf(u_mem + d_mem) - base.powf(u_mem))
}

/// Initial placement (`mosrun -b`): the node (local included in `nodes`) of least marginal cost.
pub fn place(nodes: &[NodeView], mem_mb: u32, cfg: &BalanceConfig) -> Option<u32> {
    let n = nodes.len();
    nodes
        .iter()
        .filter_map(|v| marginal_cost(v, mem_mb, n, cfg).map(|c| (c, v)))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(b.1.speed.cmp(&a.1.speed)).then(a.1.node.cmp(&b.1.node)))
        .map(|(_, v)| v.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u32 = 1024;

    fn node(node: u32, procs: u32, speed: u32) -> NodeView {
        NodeView {
            node,
            load: crate::load::normalize(procs * LOAD_SCALE, speed, 1),
            speed,
            ncpus: 1,
            mem_free_mb: 4 * GB,
            mem_total_mb: 8 * GB,
        }
    }

    fn cpu_bound(pid: u32) -> ProcView {
        ProcView { pid, load: LOAD_SCALE, mem_mb: 100, migratable: true, arrived_ms: None }
    }

    #[test]
    fn the_1_3_rule() {
        let cfg = BalanceConfig::default();
        let p = cpu_bound(1);
        // 2 processes here, idle remote: 0 + 1.3 < 2 → move.
        assert_eq!(choose_target(&node(1, 2, STD_SPEED), &p, &[node(2, 0, STD_SPEED)], &cfg).map(|t| t.0), Some(2));
        // 1 process here, idle remote: 1.3 > 1 → stay (no gain worth the move).
        assert_eq!(choose_target(&node(1, 1, STD_SPEED), &p, &[node(2, 0, STD_SPEED)], &cfg), None);
        // 3 vs 1: 1 + 1.3 = 2.3 < 3 → move; 2 vs 1: 2.3 > 2 → stay.
        assert!(choose_target(&node(1, 3, STD_SPEED), &p, &[node(2, 1, STD_SPEED)], &cfg).is_some());
        assert!(choose_target(&node(1, 2, STD_SPEED), &p, &[node(2, 1, STD_SPEED)], &cfg).is_none());
        // The least loaded of several wins.
        let c = [node(2, 2, STD_SPEED), node(3, 0, STD_SPEED), node(4, 1, STD_SPEED)];
        assert_eq!(choose_target(&node(1, 4, STD_SPEED), &p, &c, &cfg).map(|t| t.0), Some(3));
        // A node without room for the process's memory is never chosen.
        let mut full = node(3, 0, STD_SPEED);
        full.mem_free_mb = 50;
        assert_eq!(choose_target(&node(1, 4, STD_SPEED), &p, &[full], &cfg), None);
    }

    #[test]
    fn second_heaviest_is_picked() {
        let cfg = BalanceConfig::default();
        let procs = [
            ProcView { load: 900, ..cpu_bound(10) },
            ProcView { load: 600, ..cpu_bound(11) },
            ProcView { load: 300, ..cpu_bound(12) },
            ProcView { load: 950, migratable: false, ..cpu_bound(13) },
        ];
        assert_eq!(pick_process(&procs, 0, &cfg).map(|p| p.pid), Some(11));
        assert_eq!(pick_process(&procs[..1], 0, &cfg).map(|p| p.pid), Some(10));
        assert_eq!(pick_process(&procs[3..], 0, &cfg), None);
    }

    #[test]
    fn no_ping_pong() {
        let cfg = BalanceConfig::default();
        // A process that just arrived is held even where the rule would move it.
        let p = ProcView { arrived_ms: Some(100_000), ..cpu_bound(7) };
        let local = node(1, 3, STD_SPEED);
        let c = [node(2, 0, STD_SPEED)];
        assert_eq!(balance(&local, &[p], &c, 100_000 + cfg.hold_ms - 1, &cfg), None);
        assert_eq!(balance(&local, &[p], &c, 100_000 + cfg.hold_ms, &cfg), Some((7, 2)));
        // After a move 2 → 1+1 the rule does not send it back: 1 + 1.3 > 1 on either side.
        assert_eq!(balance(&node(2, 1, STD_SPEED), &[cpu_bound(7)], &[node(1, 1, STD_SPEED)], 0, &cfg), None);
    }

    #[test]
    fn slow_to_fast() {
        let cfg = BalanceConfig::default();
        // One CPU-bound process alone on a half-speed node moves to an idle double-speed node...
        let slow = node(1, 1, STD_SPEED / 2);
        let fast = node(2, 0, STD_SPEED * 2);
        assert_eq!(balance(&slow, &[cpu_bound(5)], &[fast], 0, &cfg), Some((5, 2)));
        // ...but not back.
        assert_eq!(balance(&node(2, 1, STD_SPEED * 2), &[cpu_bound(5)], &[node(1, 0, STD_SPEED / 2)], 0, &cfg), None);
        // Between two idle candidates of equal cost the faster one wins.
        let mut a = node(3, 0, STD_SPEED);
        a.ncpus = 2;
        let b = node(4, 0, 2 * STD_SPEED);
        assert_eq!(choose_target(&node(1, 3, STD_SPEED), &cpu_bound(5), &[a, b], &cfg).map(|t| t.0), Some(4));
        // A mostly idle (I/O-bound) process on a slow node does not move.
        let io = ProcView { load: 100, ..cpu_bound(6) };
        let slow_io = NodeView { load: crate::load::normalize(100, STD_SPEED / 2, 1), ..slow };
        assert_eq!(balance(&slow_io, &[io], &[fast], 0, &cfg), None);
    }

    #[test]
    fn memory_ushering() {
        let cfg = BalanceConfig::default();
        let mut local = node(1, 3, STD_SPEED);
        local.mem_free_mb = 10;
        let procs =
            [ProcView { mem_mb: 300, ..cpu_bound(1) }, ProcView { mem_mb: 2000, ..cpu_bound(2) }, ProcView { mem_mb: 50, ..cpu_bound(3) }];
        let mut small = node(2, 0, STD_SPEED);
        small.mem_free_mb = 1000;
        let mut big = node(3, 1, STD_SPEED);
        big.mem_free_mb = 6000;
        // The biggest process goes to the only node that can hold it; one move is enough.
        assert_eq!(usher(&local, &procs, &[small, big], 0, &cfg), vec![(2, 3)]);
        // With nowhere to go nothing moves; with enough memory nothing moves either.
        small.mem_free_mb = 100;
        big.mem_free_mb = 100;
        assert!(usher(&local, &procs, &[small, big], 0, &cfg).is_empty());
        local.mem_free_mb = 1000;
        assert!(usher(&local, &procs, &[node(2, 0, STD_SPEED)], 0, &cfg).is_empty());
    }

    #[test]
    fn opportunity_cost_placement() {
        let cfg = BalanceConfig::default();
        // Idle fast beats idle slow; a loaded node loses to an idle one.
        let nodes = [node(1, 2, STD_SPEED), node(2, 0, STD_SPEED / 2), node(3, 0, 2 * STD_SPEED)];
        assert_eq!(place(&nodes, 100, &cfg), Some(3));
        // A job needing 3 GiB only fits where the memory is, even if that node is busier.
        let mut roomy = node(4, 1, STD_SPEED);
        roomy.mem_free_mb = 7 * GB;
        let nodes = [node(1, 0, STD_SPEED), node(2, 0, STD_SPEED), roomy];
        assert_eq!(place(&nodes, 5 * GB, &cfg), Some(4));
        assert_eq!(place(&nodes, 9 * GB, &cfg), None);
        // Costs are convex: the marginal cost grows with utilization.
        let a = marginal_cost(&node(1, 0, STD_SPEED), 0, 4, &cfg).unwrap();
        let b = marginal_cost(&node(1, 3, STD_SPEED), 0, 4, &cfg).unwrap();
        assert!(b > a, "{a} {b}");
        // Memory pressure counts: same CPU, less free memory → higher cost.
        let mut tight = node(5, 0, STD_SPEED);
        tight.mem_free_mb = GB;
        assert_eq!(place(&[tight, node(6, 0, STD_SPEED)], 512, &cfg), Some(6));
    }
}
