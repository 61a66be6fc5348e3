//! mosrun: runs a program as a migratable MOS process. mosrun stays at home as the program's
//! parent and supervisor: it registers the program with the local mosd, moves it when told to,
//! serves as its deputy while it runs elsewhere, and exits with the program's status.
#![forbid(unsafe_code)]

mod supervisor;

use clap::Parser;
use std::path::PathBuf;

/// Run PROGRAM as a migratable MOS process.
///
/// The program starts at home (this node) with your stdin, stdout, stderr, working directory and
/// environment. The cluster may move it to other nodes while it runs (`mosctl migrate PID NODE`);
/// its files, pid and parent stay at home. mosrun exits with the program's exit status (128+N if
/// it was killed by signal N). A system call the remote node cannot run brings the program home
/// first, unless -e or -w is given.
#[derive(Parser, Debug)]
#[command(version, trailing_var_arg = true, disable_help_flag = true)]
struct Args {
    /// Control socket of the local mosd.
    #[arg(long, env = "MOS_SOCKET", default_value = mos_proto::DEFAULT_CONTROL)]
    control: PathBuf,
    /// Start on the best node (opportunity-cost placement over the nodes gossip knows).
    #[arg(short = 'b', group = "start")]
    best: bool,
    /// Start on node NODE (a node number or address).
    #[arg(short = 'N', value_name = "NODE", group = "start")]
    node: Option<String>,
    /// Start on host HOST (an address from the map).
    #[arg(short = 'r', value_name = "HOST", group = "start")]
    host: Option<String>,
    /// Start at home (the default).
    #[arg(short = 'h', group = "start")]
    home: bool,
    /// Memory the program needs, in MiB (respected by -b placement and by automatic balancing).
    #[arg(short = 'm', value_name = "MB", default_value_t = 0)]
    mem_mb: u32,
    /// Let the cluster move the program automatically (load balancing, memory ushering): the default.
    #[arg(short = 'l', group = "automatic")]
    auto: bool,
    /// Never move the program automatically (manual `mosctl migrate` still works).
    #[arg(short = 'L', group = "automatic")]
    no_auto: bool,
    /// A system call the remote node cannot run fails there with ENOSYS instead of bringing the
    /// program home (MOSIX `mosrun -e`). That includes mmap of a file (loading a library, say).
    #[arg(short = 'e', group = "unsupported")]
    fail_unsupported: bool,
    /// As -e, and print a warning on stderr naming each such call (MOSIX `mosrun -w`).
    #[arg(short = 'w', group = "unsupported")]
    warn_unsupported: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The program and its arguments.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    program: Vec<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MOS_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let start = if args.best {
        supervisor::Start::Best { mem_mb: args.mem_mb }
    } else if let Some(n) = args.node.or(args.host) {
        supervisor::Start::On(n)
    } else {
        let _ = args.home;
        supervisor::Start::Home
    };
    let _ = args.auto;
    let on_unsupported = if args.warn_unsupported {
        mos_proto::deputy::OnUnsupported::FailAndTell
    } else if args.fail_unsupported {
        mos_proto::deputy::OnUnsupported::Fail
    } else {
        mos_proto::deputy::OnUnsupported::GoHome
    };
    let opts = supervisor::Options { start, auto: !args.no_auto, mem_mb: args.mem_mb, on_unsupported };
    let code = match supervisor::run(&args.control, &args.program, opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mosrun: {e}");
            let mut src = std::error::Error::source(&*e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            127
        }
    };
    std::process::exit(code);
}
