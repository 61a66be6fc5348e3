//! The checkpoint files of one supervised process (`mosrun -C FILE -A MINUTES -N MAX`), MOSIX
//! style: FILE.1, FILE.2, ...; with MAX, after FILE.MAX the numbering starts again at FILE.1.
use nix::poll::PollTimeout;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the command line asked.
#[derive(Debug, Clone, Default)]
pub struct Periodic {
    /// `-C FILE` (absolute); default `ckpt.PID` in mosrun's working directory.
    pub base: Option<PathBuf>,
    /// `-A MINUTES`.
    pub interval: Option<Duration>,
    /// `-N MAX` (0: no limit).
    pub max: u32,
}

#[derive(Debug)]
pub struct Checkpoints {
    base: String,
    interval: Option<Duration>,
    max: u32,
    /// Checkpoints of the series written so far.
    taken: u64,
    next_due: Option<Instant>,
    command: Vec<String>,
}

impl Checkpoints {
    pub fn new(p: Periodic, command: Vec<String>, pid: u32) -> Checkpoints {
        let base = p.base.unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(format!("ckpt.{pid}")));
        Checkpoints {
            base: base.to_string_lossy().into_owned(),
            interval: p.interval,
            max: p.max,
            taken: 0,
            next_due: p.interval.map(|i| Instant::now() + i),
            command,
        }
    }

    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// The file the next checkpoint of the series goes to.
    pub fn next_path(&self) -> PathBuf {
        PathBuf::from(mos_proto::checkpoint::series_name(&self.base, self.taken + 1, self.max))
    }

    /// One more file of the series was written.
    pub fn taken(&mut self) {
        self.taken += 1;
    }

    /// Shortens a poll timeout so that the loop wakes for the next periodic checkpoint.
    pub fn cap(&self, t: PollTimeout) -> PollTimeout {
        let Some(due) = self.next_due else { return t };
        let left = due.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
        // (PollTimeout::as_millis panics on NONE in nix 0.31.)
        if t.is_some() && t.as_millis().is_some_and(|cur| u32::from(ms) >= cur) {
            t
        } else {
            PollTimeout::from(ms)
        }
    }

    /// True once per period, when a periodic checkpoint is due (the next one is scheduled then).
    pub fn due(&mut self) -> bool {
        match (self.next_due, self.interval) {
            (Some(due), Some(i)) if Instant::now() >= due => {
                self.next_due = Some(Instant::now() + i);
                true
            }
            _ => false,
        }
    }
}
