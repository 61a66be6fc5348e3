//! MOS wire formats. Every byte that crosses a socket between MOS components is defined here.
//!
//! * [`frame`]: the fixed 16-byte header on every frame (magic, version, kind, length), size bounds
//!   checked before any allocation, and version negotiation (current or previous).
//! * [`migration`]: the migration stream (`Offer` → `Accept|Refuse` → `Vmas` → `Pages`* → `Context`
//!   → `Resumed|Failed`) and its statistics.
//! * [`pages`]: the raw page-run encoding of `Pages` frames (never serde'd: header plus raw bytes).
//! * [`deputy`]: the channel between a remote component and its deputy at home (forwarded system
//!   calls with their buffers, signals, exit, recall).
//! * [`control`]: the local control socket spoken by `mosrun`, `mosctl` and `mosd`.
//! * [`nodemap`]: the MOSIX node map format.
//! * [`auth`]: the cluster key and the authenticated envelope of gossip datagrams.
//! * [`checkpoint`]: the checkpoint file (the migration stream plus a header, a file table and a
//!   SHA-256 trailer).
//! * [`secure`]: Noise-encrypted migration and deputy connections keyed by the cluster key.
//! * [`lane`]: the kernel lane's fixed records (register-only calls and their results, sent and
//!   read by mosix.ko at both ends).
//!
//! Pure code: no I/O besides generic `Read`/`Write` helpers, no clock, no unsafe.
#![forbid(unsafe_code)]

pub mod auth;
pub mod checkpoint;
pub mod control;
pub mod deputy;
pub mod frame;
pub mod lane;
pub mod migration;
pub mod nodemap;
pub mod pages;
pub mod secure;

pub use frame::{Frame, FrameError, Header, Kind};

/// Default TCP (and later UDP) port of mosd.
pub const DEFAULT_PORT: u16 = 4949;
/// Default path of mosd's control socket.
pub const DEFAULT_CONTROL: &str = "/run/mos/mosd.sock";
/// Page size of the migration stream (x86-64).
pub const PAGE_SIZE: usize = 4096;
