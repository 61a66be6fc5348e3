//! CPU speed calibration at start: times the brain's fixed integer kernel a few times and keeps the
//! best run (the least disturbed by other load), in MOSIX-style speed units.
use mos_brain::load::{calibration_work, speed_from_rate};
use std::time::{Duration, Instant};

/// Iterations per timed run to start with: about 3 ms on the reference core.
const ITERATIONS: u64 = 2_000_000;
/// Timed runs; the fastest counts.
const RUNS: usize = 9;
/// A run shorter than this says the clock is coarse (e.g. a jiffies clock in a VM without a
/// calibrated TSC): the run is made longer until it is not.
const MIN_RUN: Duration = Duration::from_millis(2);

/// This machine's per-core speed (10000 = the reference core).
pub fn calibrate() -> u32 {
    let mut n = ITERATIONS;
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < RUNS {
        let t = Instant::now();
        std::hint::black_box(calibration_work(std::hint::black_box(n)));
        let d = t.elapsed();
        if d < MIN_RUN && n < ITERATIONS << 12 {
            // Too short to measure with this clock: start over with longer runs.
            n *= 4;
            best = Duration::MAX;
            runs = 0;
            continue;
        }
        best = best.min(d);
        runs += 1;
    }
    speed_from_rate(n as f64 / best.as_secs_f64().max(1e-9))
}
