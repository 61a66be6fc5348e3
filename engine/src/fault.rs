//! Fault injection for tests: when the environment variable `MOS_FAULT` names a point, the process
//! kills itself with SIGKILL on reaching it (as a crashed or powered-off node would die).
//! Points: `after-offer`, `after-accept`, `mid-pages` (after the Nth page frame, N from
//! `MOS_FAULT_AFTER`, default 1), `before-resumed`, `mid-lazy` (post-copy, receiver: after the
//! Nth page frame of the lazy phase, N from `MOS_FAULT_AFTER`, default 1).

/// Dies at `name` if `MOS_FAULT=name`.
pub fn point(name: &str) {
    if std::env::var("MOS_FAULT").is_ok_and(|v| v == name) {
        tracing::warn!(point = name, "MOS_FAULT: dying here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Counts page frames and dies after the configured number when `MOS_FAULT=mid-pages`.
pub fn page_frame(n: u64) {
    if std::env::var("MOS_FAULT").is_ok_and(|v| v == "mid-pages") {
        let after: u64 = std::env::var("MOS_FAULT_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        if n >= after {
            point("mid-pages");
        }
    }
}

/// Counts page frames of a post-copy's lazy phase and dies after the configured number when
/// `MOS_FAULT=mid-lazy`.
pub fn lazy_frame(n: u64) {
    if std::env::var("MOS_FAULT").is_ok_and(|v| v == "mid-lazy") {
        let after: u64 = std::env::var("MOS_FAULT_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        if n >= after {
            point("mid-lazy");
        }
    }
}
