//! mosrun: runs a program as a migratable MOS process. mosrun stays at home as the program's
//! parent and supervisor: it registers the program with the local mosd, moves it when told to,
//! serves as its deputy while it runs elsewhere, and exits with the program's status.
#![forbid(unsafe_code)]

mod checkpoints;
mod supervisor;

use clap::Parser;
use std::path::PathBuf;

/// Run PROGRAM as a migratable MOS process.
///
/// The program starts at home (this node) with your stdin, stdout, stderr, working directory and
/// environment. The cluster may move it to other nodes while it runs (`mosctl migrate PID NODE`);
/// its files, pid and parent stay at home. mosrun exits with the program's exit status (128+N if
/// it was killed by signal N).
///
/// Checkpoints (MOSIX style): `-C FILE` names the checkpoint files FILE.1, FILE.2, ... (default
/// ckpt.PID), `-A MINUTES` takes one every MINUTES (fractions allowed), `-N MAX` keeps at most MAX
/// files (after FILE.MAX the numbering starts again at FILE.1). `mosctl checkpoint PID` takes one on
/// demand. `mosrun -R FILE [-O fd=PATH,...]` recovers a process (with a new pid);
/// `mosrun -I FILE` shows what a checkpoint holds.
///
/// A system call the remote node cannot run brings the program home first, unless -e or -w is
/// given.
#[derive(Parser, Debug)]
#[command(version, trailing_var_arg = true, disable_help_flag = true)]
struct Args {
    /// Control socket of the local mosd.
    #[arg(long, env = "MOS_SOCKET", default_value = mos_proto::DEFAULT_CONTROL)]
    control: PathBuf,
    /// Start on the best node (opportunity-cost placement over the nodes gossip knows).
    #[arg(short = 'b', group = "start")]
    best: bool,
    /// Start on node NODE (a node number or address). With -C or -R, MOSIX's `-N MAX` instead:
    /// keep at most MAX checkpoint files (then use -r to choose the start node).
    #[arg(short = 'N', value_name = "NODE|MAX")]
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
    /// Checkpoint files are FILE.1, FILE.2, ... (default: ckpt.PID in this directory).
    #[arg(short = 'C', value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Take a checkpoint every MINUTES minutes (a fraction is allowed, e.g. 0.5).
    #[arg(short = 'A', value_name = "MINUTES")]
    every: Option<f64>,
    /// Recover the process saved in checkpoint FILE (instead of starting a program).
    #[arg(short = 'R', value_name = "FILE", conflicts_with = "inspect")]
    recover: Option<PathBuf>,
    /// With -R: reopen descriptor fd on PATH instead of what the checkpoint recorded (fd=PATH,...).
    #[arg(short = 'O', value_name = "fd=PATH,...", requires = "recover", value_delimiter = ',')]
    reopen: Vec<String>,
    /// Show what checkpoint FILE holds (program, pid, time, memory, files) and check it is intact.
    #[arg(short = 'I', value_name = "FILE")]
    inspect: Option<PathBuf>,
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
    #[arg(required_unless_present_any = ["recover", "inspect"], num_args = 1.., allow_hyphen_values = true)]
    program: Vec<String>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("mosrun: {msg}");
    std::process::exit(127);
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|e| fail(format!("bad file name {}: {e}", p.display())))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MOS_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(file) = &args.inspect {
        match mos_engine::checkpoint::inspect(file) {
            Ok(s) => {
                print!("{}", mos_engine::checkpoint::describe(&s));
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("mosrun: {e}");
                std::process::exit(1);
            }
        }
    }
    // MOSIX's -N MAX goes with checkpoints; otherwise -N names the start node.
    let checkpointing = args.checkpoint.is_some() || args.recover.is_some() || args.every.is_some();
    let (node, max) = match (&args.node, checkpointing) {
        (Some(n), true) => (
            None,
            n.parse::<u32>().unwrap_or_else(|_| fail(format!("-N {n}: with checkpoints, -N is the largest number of checkpoint files"))),
        ),
        (n, _) => (n.clone(), 0),
    };
    if [node.is_some(), args.host.is_some(), args.best, args.home].iter().filter(|b| **b).count() > 1 {
        fail("choose one start: -N NODE, -r HOST, -b or -h");
    }
    let interval = args.every.map(|m| {
        if !(m.is_finite() && m > 0.0 && m < 1e7) {
            fail(format!("-A {m}: the checkpoint interval must be a positive number of minutes"));
        }
        std::time::Duration::from_secs_f64(m * 60.0)
    });
    let mut overrides = Vec::new();
    for o in &args.reopen {
        let (fd, path) = o.split_once('=').unwrap_or_else(|| fail(format!("-O {o}: expected fd=PATH")));
        let fd = fd.parse::<u32>().unwrap_or_else(|_| fail(format!("-O {o}: `{fd}` is not a descriptor number")));
        overrides.push((fd, absolute(std::path::Path::new(path))));
    }
    let checkpoint = checkpoints::Periodic { base: args.checkpoint.as_deref().map(absolute), interval, max };
    let launch = match &args.recover {
        Some(f) => {
            if !args.program.is_empty() {
                fail("-R FILE recovers a process: give no program");
            }
            supervisor::Launch::Recover { file: absolute(f), overrides }
        }
        None => supervisor::Launch::Spawn(args.program.clone()),
    };
    let start = if args.best {
        supervisor::Start::Best { mem_mb: args.mem_mb }
    } else if let Some(n) = node.or(args.host) {
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
    let opts = supervisor::Options { start, auto: !args.no_auto, mem_mb: args.mem_mb, checkpoint, on_unsupported };
    let code = match supervisor::run(&args.control, launch, opts) {
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
