//! Large gossip simulation: `cargo run --release -p mos-brain --bin gossip_sim_bench [N] [W] [SECONDS] [LOSS]`
//! (defaults 10000 nodes, window 256, 300 virtual seconds, no loss). Prints wall time and
//! convergence figures as a table.
#![forbid(unsafe_code)]

use std::time::Instant;

use mos_brain::sim::{Sim, SimConfig};
use mos_brain::theory::expected_ages;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let n: usize = arg(1, 10_000);
    let w: usize = arg(2, 256);
    let secs: u64 = arg(3, 300);
    let loss: f64 = arg(4, 0.0);
    let mut cfg = SimConfig::new(n, w, 2024);
    cfg.loss = loss;
    let start = Instant::now();
    let mut sim = Sim::new(cfg);
    println!(
        "# {n} nodes, window {w}, step {} ms, loss {:.0} %, setup {:.1} s wall",
        cfg.node.step_ms,
        loss * 100.0,
        start.elapsed().as_secs_f64()
    );
    if let Some((av, mx)) = expected_ages(n, w) {
        println!("# closed form: average age {av:.1} steps, maximal age {mx:.1} steps");
    }
    println!("| virtual s | wall s | pairs known % | datagrams | MB sent |");
    println!("|---:|---:|---:|---:|---:|");
    let total = (n * (n - 1)) as f64;
    let mut converged = None;
    let mut t = 0;
    while t < secs * 1000 {
        t += 5_000;
        sim.run_until(t);
        let unknown = sim.unknown_pairs();
        if unknown == 0 && converged.is_none() {
            converged = Some(t);
        }
        if t % 20_000 == 0 || (unknown == 0 && converged == Some(t)) {
            println!(
                "| {:.0} | {:.1} | {:.3} | {} | {:.0} |",
                t as f64 / 1000.0,
                start.elapsed().as_secs_f64(),
                100.0 * (1.0 - unknown as f64 / total),
                sim.stats.sent,
                sim.stats.bytes as f64 / 1e6
            );
        }
        if converged.is_some() && t >= converged.unwrap_or(0) + 40_000 {
            break;
        }
    }
    let (avg, max, unknown) = sim.ages();
    let wall = start.elapsed().as_secs_f64();
    println!();
    match converged {
        Some(c) => println!("converged (every node knows every other) at {:.0} s virtual (±5 s sampling)", c as f64 / 1000.0),
        None => println!("not converged after {} s virtual: {unknown} pairs unknown", t / 1000),
    }
    println!(
        "at {:.0} s: average age {:.1} steps, maximal age {:.1} steps; {:.0} bytes/s sent per node; wall time {wall:.1} s for {:.0} virtual s",
        t as f64 / 1000.0,
        avg / cfg.node.step_ms as f64,
        max as f64 / cfg.node.step_ms as f64,
        sim.stats.bytes as f64 / n as f64 / (t as f64 / 1000.0),
        t as f64 / 1000.0
    );
}
