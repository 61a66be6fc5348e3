//! What this node measures for the brain: its load (runnable tasks, averaged over each second),
//! its memory and CPU shape (those of its cgroup when it runs in one, so a virtual node looks like
//! the machine it stands for), and the CPU demand and memory of each process running here.
use crate::capacity::{self, Cgroups, Limits};
use crate::registry::Local;
use mos_brain::load::LOAD_SCALE;
use mos_brain::node::ProcSample;
use std::collections::HashMap;
use std::time::Instant;

/// The node's measurements between two samples.
#[derive(Debug)]
pub struct Sampler {
    cg: Cgroups,
    limits: Limits,
    runnable_sum: u64,
    runnable_n: u64,
    /// Per process: (run + wait ns from schedstat, when read).
    prev: HashMap<u32, (u64, Instant)>,
}

/// Runnable tasks on the whole machine now, not counting the sampling thread: the `running` of
/// /proc/loadavg's `running/total` field (the same count as /proc/stat's `procs_running`, far
/// cheaper to read ten times a second).
fn machine_runnable() -> u32 {
    let t = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let n: u32 = t.split_whitespace().nth(3).and_then(|f| f.split('/').next()).and_then(|v| v.parse().ok()).unwrap_or(1);
    n.saturating_sub(1)
}

/// This daemon's own thread ids (never counted as load).
fn own_tids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task").map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default()
}

/// Time the task spent running or waiting to run, ns (from /proc/PID/schedstat).
fn demand_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some(f.next()??.saturating_add(f.next()??))
}

/// Resident memory of `pid`, MiB.
fn rss_mb(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    ((pages * 4096) >> 20) as u32
}

fn meminfo() -> (u64, u64) {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |k: &str| {
        t.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            * 1024
    };
    (field("MemAvailable:"), field("MemTotal:"))
}

impl Sampler {
    pub fn new() -> Sampler {
        let cg = Cgroups::of_self();
        let limits = capacity::limits(&cg);
        Sampler { cg, limits, runnable_sum: 0, runnable_n: 0, prev: HashMap::new() }
    }

    /// The node's CPU quota (fraction of CPUs), if its cgroup has one.
    pub fn cpu_fraction(&self) -> Option<f64> {
        self.limits.cpu_fraction
    }

    /// Takes one instantaneous runnable count (call it ~10 times a second).
    pub fn poll_runnable(&mut self) {
        // Without a CPU quota the node is the machine: /proc/stat alone, no per-task reads.
        let n = match self.limits.cpu_fraction {
            Some(_) => capacity::runnable(&self.cg, &own_tids()).unwrap_or_else(machine_runnable),
            None => machine_runnable(),
        };
        self.runnable_sum += u64::from(n);
        self.runnable_n += 1;
    }

    /// The runnable count averaged since the last call, in the brain's fixed point.
    pub fn take_runnable(&mut self) -> u32 {
        if self.runnable_n == 0 {
            self.poll_runnable();
        }
        let avg = self.runnable_sum * u64::from(LOAD_SCALE) / self.runnable_n.max(1);
        self.runnable_sum = 0;
        self.runnable_n = 0;
        u32::try_from(avg).unwrap_or(u32::MAX)
    }

    /// (available, total) memory in bytes: the cgroup's limit and use when it has a limit, else
    /// the machine's.
    pub fn memory(&self) -> (u64, u64) {
        let (avail, total) = meminfo();
        match (self.limits.mem_limit, capacity::mem_used(&self.cg)) {
            (Some(limit), Some(used)) if limit < total => (limit.saturating_sub(used).min(avail), limit),
            _ => (avail, total),
        }
    }

    /// One sample per process running here: CPU demand (running or runnable share of the last
    /// interval, [`LOAD_SCALE`] = always), memory (resident, or declared if larger).
    /// `ms_at` turns an instant into the brain's clock.
    pub fn procs(&mut self, locals: &[Local], may_move: impl Fn(&Local) -> bool, ms_at: impl Fn(Instant) -> u64) -> Vec<ProcSample> {
        let now = Instant::now();
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for l in locals {
            let Some(d) = demand_ns(l.pid) else { continue };
            let cpu = match self.prev.get(&l.pid) {
                Some(&(pd, pt)) => {
                    let dt = now.duration_since(pt).as_nanos().max(1) as u64;
                    (d.saturating_sub(pd).saturating_mul(u64::from(LOAD_SCALE)) / dt).min(u64::from(LOAD_SCALE)) as u32
                }
                None => 0,
            };
            next.insert(l.pid, (d, now));
            out.push(ProcSample {
                pid: l.pid,
                cpu,
                mem_mb: rss_mb(l.pid).max(l.mem_mb),
                migratable: may_move(l),
                arrived_ms: l.since.map(&ms_at),
            });
        }
        self.prev = next;
        out
    }
}
