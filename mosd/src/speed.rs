//! CPU speed calibration at start: times the brain's fixed integer kernel a few times and keeps the
//! best run (the least disturbed by other load), in MOSIX-style speed units.
use mos_brain::load::{calibration_work, speed_from_rate};
use std::time::Instant;

/// Iterations per timed run: about 3 ms on the reference core.
const ITERATIONS: u64 = 2_000_000;
/// Timed runs; the fastest counts.
const RUNS: usize = 9;

/// This machine's per-core speed (10000 = the reference core).
pub fn calibrate() -> u32 {
    let mut best = f64::MAX;
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(calibration_work(std::hint::black_box(ITERATIONS)));
        best = best.min(t.elapsed().as_secs_f64());
    }
    speed_from_rate(ITERATIONS as f64 / best.max(1e-9))
}
