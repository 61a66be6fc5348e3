//! mosctl: the cluster view and admin commands. One module per subcommand family; every view has
//! `--json`.
#![forbid(unsafe_code)]

mod client;
mod migrate;
mod mon;
mod views;

use clap::{Parser, Subcommand};
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
    Migrate {
        pid: u32,
        node: String,
        /// Print the migration statistics as JSON.
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
}

fn main() {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Migrate { pid, node, json } => migrate::run(&args.control, pid, &node, json),
        Cmd::Ps { json } => views::ps(&args.control, json),
        Cmd::Status { node, json } => views::status(&args.control, node.as_deref(), json),
        Cmd::Whois { node } => views::whois(&args.control, &node),
        Cmd::Mon { interval, once } => mon::run(&args.control, interval, once),
    };
    if let Err(e) = r {
        eprintln!("mosctl: {e}");
        std::process::exit(1);
    }
}
