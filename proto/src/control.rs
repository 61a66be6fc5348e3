//! The control socket protocol (Unix stream socket, `Kind::Control` frames).
//!
//! `mosctl` sends one [`Request`] and reads one [`Reply`]. `mosrun` sends [`Request::Register`] and
//! keeps the connection: mosd then sends it [`Command`]s and mosrun answers each with
//! [`Request::CommandDone`], and reports moves with [`Request::Moved`].
use crate::migration::Stats;
use crate::secure::Credential;
use serde::{Deserialize, Serialize};

/// Where a process should go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Home,
    Node { node: u32, addr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// From mosrun: supervise `pid` (its child), started as `command`. `auto`: the balancer may
    /// move it (`mosrun -l`, the default; `-L` clears it). `mem_mb`: memory it declared (`-m`).
    Register { pid: u32, uid: u32, command: String, auto: bool, mem_mb: u32 },
    /// From mosrun: the answer to `Command{id}`.
    CommandDone { id: u64, result: Result<Stats, String> },
    /// From mosrun: the process now runs on `node` (0 = home).
    Moved { node: u32 },
    /// From mosctl: list processes.
    Ps,
    /// From mosctl: this node's status.
    Status,
    /// From mosctl: move home pid `pid` to `target` ("home", a node number or an address).
    Migrate { pid: u32, target: String },
    /// From mosctl: which node is `name` (a number or an address)?
    Whois { name: String },
    /// From mosrun -b: the best node to start a job that needs `mem_mb` MiB (answered as `Whois`).
    BestNode { mem_mb: u32 },
    /// From mosctl (root only): a node administration command, MOSIX style.
    Admin { op: AdminOp },
    /// From mosctl: checkpoint home pid `pid` to `file` (absolute; `None`: the next file of its
    /// mosrun's series, `mosrun -C`), then continue, stop or end it. Owner or root only.
    Checkpoint { pid: u32, file: Option<String>, then: AfterCheckpoint },
    /// From mosrun: the answer to `Command::Checkpoint{id}`.
    CheckpointDone { id: u64, result: Result<Checkpointed, String> },
    /// From mosctl: like `Migrate`, with the way the process moves out of home.
    MigrateMode { pid: u32, target: String, mode: Mode },
    /// From mosrun, before it connects to another node: a credential for a secure connection
    /// (`secure::Credential`), issued for the asking process's uid and gid.
    Ticket,
}

/// What happens to a process once its checkpoint is safely written (MOSIX `migrate PID
/// checkpoint|chkstop|chkexit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterCheckpoint {
    /// It continues.
    Continue,
    /// It is stopped (SIGSTOP); `kill -CONT` resumes it.
    Stop,
    /// It ends; its mosrun exits with status 0.
    Exit,
}

/// A checkpoint written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpointed {
    pub path: String,
    pub bytes: u64,
    /// How long the process was frozen.
    pub frozen_us: u64,
    /// From the request to the file being durable (fsync and rename done).
    pub total_us: u64,
}

/// How a process moves out of its home node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Pages stream while the process runs (dirty pages in rounds); then a short freeze (default).
    #[default]
    PreCopy,
    /// Freeze first, then copy everything (`mosctl migrate --stop-copy`).
    StopCopy,
    /// Post-copy (`mosctl migrate --lazy`): the process resumes on the target at once; its large
    /// anonymous areas follow, fetched on fault and pushed in the background.
    Lazy,
}

/// `mosctl stay|nostay|lstay|nolstay|block|noblock|expel|bring|shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// No automatic migration away from this node (own processes and guests).
    Stay,
    NoStay,
    /// No automatic migration of this node's own processes (guests may still be moved on).
    LStay,
    NoLStay,
    /// Accept no new guests.
    Block,
    NoBlock,
    /// Send every guest back to its home.
    Expel,
    /// Bring every process whose home is here back home.
    Bring,
    /// Expel and bring, then stop mosd.
    Shutdown,
}

/// A process row of `mosctl ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRow {
    /// Pid at the home node.
    pub pid: u32,
    pub home: u32,
    /// Node number where it runs now.
    pub node: u32,
    pub command: String,
    /// True for a guest hosted here on behalf of another node.
    pub guest: bool,
    /// Pid of the remote component on this node (guests only).
    pub local_pid: Option<u32>,
    pub last_migration: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: u32,
    pub address: String,
    pub state: String,
    pub ncpus: u32,
    /// CPU speed per CPU, MOSIX-style units (10000 = the standard CPU).
    pub speed: u32,
    pub load: f64,
    pub mem_free: u64,
    pub mem_total: u64,
    /// Processes whose home is this node.
    pub procs: u32,
    /// Guests running here for other nodes.
    pub guests: u32,
    pub age_ms: u64,
    /// Gossip datagrams this node dropped (bad MAC, replayed, undecodable); own row only.
    pub dropped_datagrams: u64,
    /// TCP connections this node dropped before they carried a valid migration; own row only.
    pub dropped_connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Registered {
        node: u32,
    },
    Ps {
        processes: Vec<ProcRow>,
    },
    Status {
        nodes: Vec<NodeStatus>,
    },
    Migrated {
        stats: Stats,
    },
    Error {
        message: String,
    },
    Whois {
        node: u32,
        address: String,
    },
    Checkpointed(Checkpointed),
    /// Answer to `Ticket`: `None` when this node has no cluster key (connections stay plain).
    Ticket {
        credential: Option<Credential>,
    },
}

/// From mosd to a registered mosrun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Migrate {
        id: u64,
        target: Target,
    },
    Checkpoint {
        id: u64,
        file: Option<String>,
        then: AfterCheckpoint,
    },
    /// Like `Migrate`, with the way the process moves out of home (`Migrate` means `Mode::PreCopy`).
    MigrateMode {
        id: u64,
        target: Target,
        mode: Mode,
    },
}
