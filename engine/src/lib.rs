//! The MOS portable engine: moves an unmodified single-threaded Linux process between nodes with
//! ptrace, /proc and process_vm_{readv,writev}, and runs its remote component under a seccomp
//! filter whose user notifications are answered here or by the deputy at home.
//!
//! * [`capture`]: sender side (freeze, context, memory map, page stream) and [`capture::thaw`].
//! * [`restore`]: receiver side (rebuild a process inside a stub or the deputy).
//! * [`deputy`]: the home task after the move: executes forwarded calls in its own context.
//! * [`guest`]: the remote side: answers intercepted calls, relays signals and exit, goes home.
//! * [`checkpoint`]: a process to a checkpoint file and back (the migration stream in a file).
//! * [`channel`]: the connection between nodes, plain or Noise-encrypted with the cluster key.
//! * [`migrate`]: whole procedures (`migrate_out`, `receive_home`, `accept_guest`).
//! * [`policy`], [`seccomp`], [`syscall_names`]: the system-call table and the filter built from it.
//! * [`ptrace`] (typestate wrapper), [`procfs`], [`mem`], [`sys`] (all FFI).
#![deny(unsafe_code)]

pub mod capture;
pub mod channel;
pub mod checkpoint;
pub mod deputy;
pub mod fault;
pub mod guest;
pub mod mem;
pub mod migrate;
pub mod native;
pub mod native_restore;
pub mod policy;
pub mod postcopy;
pub mod precopy;
pub mod procfs;
pub mod ptrace;
pub mod restore;
pub mod seccomp;
pub mod sys;
pub mod syscall_names;

use nix::errno::Errno;

/// Errors of the engine. Each names the process and the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} on pid {pid} failed: {errno}")]
    Sys { what: &'static str, pid: i32, errno: Errno },
    #[error("{what} injected into pid {pid} failed: {errno}")]
    Injected { what: &'static str, pid: i32, errno: Errno },
    #[error("cannot use {path}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} cannot migrate: {reason}")]
    Unsupported { pid: i32, reason: String },
    #[error("process {pid} ended while its memory was being copied (it was not moved)")]
    Ended { pid: i32 },
    #[error("traced process {pid} ended unexpectedly ({how})")]
    TraceeGone {
        pid: i32,
        how: String,
        /// Shell-style status if it exited or was killed (the status was reaped with it).
        code: Option<i32>,
    },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("migration stream: {0}")]
    Proto(#[from] mos_proto::FrameError),
    #[error("the target refused: {0}")]
    Refused(String),
    #[error("the peer failed: {0}")]
    PeerFailed(String),
    #[error("restore failed: {0}")]
    Restore(String),
    /// A checkpoint or a recovery that did not happen; the message says why and what became of
    /// the process.
    #[error("{0}")]
    Checkpoint(String),
    #[error("secure connection to {addr} failed: {reason}")]
    Secure { addr: std::net::SocketAddr, reason: String },
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Proto(mos_proto::FrameError::Io(e))
    }
}
