//! Load as in MOSIX (constants as kept in Kerrighed's mosix_probe.c, notes §1.9).

/// Fixed-point unit of load: one runnable process on one standard-speed CPU.
pub const LOAD_SCALE: u32 = 1000;
/// The standard CPU speed (MOSIX-style units).
pub const STD_SPEED: u32 = 10_000;

/// Node load smoothing: rises `(5·old + 3·new)/8`, falls immediately.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadAverager {
    mean: u32,
}

impl LoadAverager {
    /// Feed one sample (already normalized); returns the smoothed load.
    pub fn update(&mut self, sample: u32) -> u32 {
        self.mean = if sample > self.mean { ((5 * u64::from(self.mean) + 3 * u64::from(sample)) / 8) as u32 } else { sample };
        self.mean
    }

    /// Current smoothed load.
    pub fn get(&self) -> u32 {
        self.mean
    }

    /// Lower the load at once (a process just left).
    pub fn discount(&mut self, by: u32) {
        self.mean = self.mean.saturating_sub(by);
    }
}

/// Normalize a runnable count (fixed point, [`LOAD_SCALE`] per process) by node capacity:
/// `runnable × STD_SPEED / (speed × ncpus)`.
pub fn normalize(runnable: u32, speed: u32, ncpus: u16) -> u32 {
    let cap = u64::from(speed.max(1)) * u64::from(ncpus.max(1));
    u32::try_from(u64::from(runnable) * u64::from(STD_SPEED) / cap).unwrap_or(u32::MAX)
}

/// Iterations of [`calibration_work`] per second that count as [`STD_SPEED`]: one core of the
/// reference machine (a 2-core x86-64 build host, measured 650-660 M/s).
pub const REFERENCE_RATE: f64 = 650e6;

/// The CPU speed benchmark's kernel: `n` rounds of xorshift and multiply-add, integer only and
/// cache resident, so that its rate tracks core speed. The daemon times it (this crate has no
/// clock); it is compiled optimized in every profile so that debug builds calibrate the same.
pub fn calibration_work(n: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut acc = 0u64;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_add(x.wrapping_mul(i | 1));
    }
    acc
}

/// Speed in MOSIX-style units from a measured rate of [`calibration_work`] iterations per second.
pub fn speed_from_rate(rate: f64) -> u32 {
    (rate / REFERENCE_RATE * f64::from(STD_SPEED)).round().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// Per-process CPU use EWMA `(3·old + new)/4` (fixed point, [`LOAD_SCALE`] = one full CPU).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcCpu {
    ewma: u32,
    primed: bool,
}

impl ProcCpu {
    /// Feed one sample; returns the average.
    pub fn update(&mut self, sample: u32) -> u32 {
        self.ewma = if self.primed { ((3 * u64::from(self.ewma) + u64::from(sample)) / 4) as u32 } else { sample };
        self.primed = true;
        self.ewma
    }

    /// Current average.
    pub fn get(&self) -> u32 {
        self.ewma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosix_smoothing_rises_slowly_and_falls_at_once() {
        let mut l = LoadAverager::default();
        assert_eq!(l.update(800), 300);
        assert_eq!(l.update(800), 487);
        assert_eq!(l.update(100), 100);
        let mut p = ProcCpu::default();
        assert_eq!(p.update(1000), 1000);
        assert_eq!(p.update(0), 750);
        assert_eq!(p.update(0), 562);
    }

    #[test]
    fn speed_units() {
        assert_eq!(speed_from_rate(REFERENCE_RATE), STD_SPEED);
        assert_eq!(speed_from_rate(REFERENCE_RATE / 2.0), STD_SPEED / 2);
        assert_eq!(speed_from_rate(0.0), 1);
        // The kernel does the work it is asked for (not optimized away: results differ with n).
        assert_ne!(calibration_work(10), calibration_work(11));
    }

    #[test]
    fn normalization_by_speed_and_cpus() {
        assert_eq!(normalize(1000, STD_SPEED, 1), 1000);
        assert_eq!(normalize(1000, STD_SPEED / 2, 1), 2000);
        assert_eq!(normalize(4000, STD_SPEED, 4), 1000);
        assert_eq!(normalize(1000, 0, 0), 1000 * STD_SPEED);
    }
}
