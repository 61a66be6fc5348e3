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
    fn normalization_by_speed_and_cpus() {
        assert_eq!(normalize(1000, STD_SPEED, 1), 1000);
        assert_eq!(normalize(1000, STD_SPEED / 2, 1), 2000);
        assert_eq!(normalize(4000, STD_SPEED, 4), 1000);
        assert_eq!(normalize(1000, 0, 0), 1000 * STD_SPEED);
    }
}
