//! mosctl: the cluster view and admin commands. One module per subcommand family; every view has
//! `--json`.
#![forbid(unsafe_code)]

mod admin;
mod checkpoint;
mod client;
mod migrate;
mod mon;
mod views;

use clap::{Parser, Subcommand};
use mos_proto::control::{AdminOp, Mode};
use std::path::PathBuf;

/// View and administer a MOS cluster through the local mosd.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Control socket of the local mosd.
    #[arg(long, global = true, env = "MOS_SOCKET", default_value = mos_proto::DEFAULT_CONTROL)]
    control: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Move a process: PID is its pid at its home node; NODE is a node number, an address, or `home`.
    /// NODE `checkpoint`, `chkstop` or `chkexit` checkpoints it instead (MOSIX), and lets it
    /// continue, stops it or ends it.
    Migrate {
        pid: u32,
        node: String,
        /// Print the migration statistics as JSON.
        #[arg(long)]
        json: bool,
        /// Wait until the move is done and print its statistics. `migrate` always waits; the
        /// flag says so explicitly (issue 6's `mosctl migrate --wait [--json] PID NODE`).
        #[arg(long)]
        wait: bool,
        /// Move out of home with stop-and-copy (freeze, then copy everything) instead of the
        /// default pre-copy (copy while the process runs, then a short freeze).
        #[arg(long, conflicts_with = "lazy")]
        stop_copy: bool,
        /// Post-copy: the process resumes on NODE at once; its memory follows, fetched on fault
        /// and pushed in the background. Home keeps its copy until NODE has every page: if home
        /// fails before then the process is lost; if the link fails, it resumes at home.
        #[arg(long)]
        lazy: bool,
    },
    /// Checkpoint a process (owner or root): write it to FILE (default: the next file of its
    /// `mosrun -C` series, `ckpt.PID.N` without -C) and let it continue. `mosctl migrate PID
    /// chkstop|chkexit` also stops or ends it. Recover with `mosrun -R FILE`.
    Checkpoint {
        pid: u32,
        file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List MOS processes whose home is this node, and guests running here for other nodes.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Show every node as this node sees it (gossip): state, cpus, load, memory, processes, and
    /// the age of that information. With NODE (number or address), only that node.
    Status {
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Translate a node number to its address, or an address to its node number.
    Whois { node: String },
    /// Live view of every node's load (per CPU) and memory use as bars, redrawn every interval.
    Mon {
        /// Redraw interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// (root) No automatic migration away from this node: neither its own processes nor guests.
    Stay,
    /// (root) Undo `stay`.
    Nostay,
    /// (root) No automatic migration of this node's own processes away (guests may still move on).
    Lstay,
    /// (root) Undo `lstay`.
    Nolstay,
    /// (root) Accept no new guests from other nodes.
    Block,
    /// (root) Undo `block`.
    Noblock,
    /// (root) Send every guest back to its home node; waits until they are gone.
    Expel,
    /// (root) Bring every process whose home is this node back home; waits until they are back.
    Bring,
    /// (root) Block, expel and bring, then stop this node's mosd (it announces that it leaves).
    Shutdown,
}

fn main() {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Migrate { pid, ref node, json, .. } if checkpoint::action(node).is_some() => {
            checkpoint::run(&args.control, pid, None, checkpoint::action(node).expect("checked"), json)
        }
        Cmd::Checkpoint { pid, file, json } => {
            checkpoint::run(&args.control, pid, file.as_deref(), mos_proto::control::AfterCheckpoint::Continue, json)
        }
        Cmd::Migrate { pid, node, json, wait: _, stop_copy, lazy } => {
            let mode = if lazy {
                Mode::Lazy
            } else if stop_copy {
                Mode::StopCopy
            } else {
                Mode::PreCopy
            };
            migrate::run(&args.control, pid, &node, mode, json)
        }
        Cmd::Ps { json } => views::ps(&args.control, json),
        Cmd::Status { node, json } => views::status(&args.control, node.as_deref(), json),
        Cmd::Whois { node } => views::whois(&args.control, &node),
        Cmd::Mon { interval, once } => mon::run(&args.control, interval, once),
        Cmd::Stay => admin::run(&args.control, AdminOp::Stay),
        Cmd::Nostay => admin::run(&args.control, AdminOp::NoStay),
        Cmd::Lstay => admin::run(&args.control, AdminOp::LStay),
        Cmd::Nolstay => admin::run(&args.control, AdminOp::NoLStay),
        Cmd::Block => admin::run(&args.control, AdminOp::Block),
        Cmd::Noblock => admin::run(&args.control, AdminOp::NoBlock),
        Cmd::Expel => admin::run(&args.control, AdminOp::Expel),
        Cmd::Bring => admin::run(&args.control, AdminOp::Bring),
        Cmd::Shutdown => admin::run(&args.control, AdminOp::Shutdown),
    };
    if let Err(e) = r {
        eprintln!("mosctl: {e}");
        std::process::exit(1);
    }
}
