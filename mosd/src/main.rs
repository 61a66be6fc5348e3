//! mosd: the MOS node daemon. Serves incoming migrations and hosts their remote components
//! (guests), keeps the registry of processes whose home is this node, and answers mosrun and
//! mosctl on a Unix control socket.
#![forbid(unsafe_code)]

mod admin;
mod balance;
mod capacity;
mod control;
mod gossip;
mod guard;
mod registry;
mod sample;
mod server;
mod speed;
mod status;

use clap::Parser;
use mos_proto::nodemap::NodeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// The MOS node daemon.
///
/// One mosd runs on every node. It receives processes migrated to this node and runs them as
/// guests (their system calls that need home go back to their deputy), and supervises the
/// processes started here with `mosrun` through its control socket.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Args {
    /// MOSIX node map: lines `first-node-number address count`.
    #[arg(long)]
    map: PathBuf,
    /// This node's number in the map (default: the map entry whose address is local).
    #[arg(long)]
    node: u32,
    /// TCP port for migration and deputy traffic.
    #[arg(long, default_value_t = mos_proto::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on (default: this node's address from the map).
    #[arg(long)]
    listen: Option<IpAddr>,
    /// Control socket for mosrun and mosctl.
    #[arg(long, env = "MOS_SOCKET", default_value = mos_proto::DEFAULT_CONTROL)]
    control: PathBuf,
    /// CPU speed per core in MOSIX-style units (10000 = the reference core). Default: measured by
    /// a short benchmark at start. A CPU quota of mosd's cgroup scales it (a virtual node).
    #[arg(long)]
    speed: Option<u32>,
    /// Make no automatic migration decisions here (processes still move when told to, and other
    /// nodes may still send guests). For test benches whose nodes share one machine without
    /// cgroups, where every node would see the same machine load.
    #[arg(long)]
    no_balance: bool,
    /// Auto-discovery: also announce this node by broadcast to ADDR (the local segment's broadcast
    /// address, e.g. 10.0.0.255), so that nodes not in each other's maps find each other. Nodes
    /// that hear it add the sender to their view (a cluster key, when set, still applies).
    #[arg(long, value_name = "ADDR")]
    broadcast: Option<std::net::Ipv4Addr>,
    /// Cluster key file (at least 16 bytes, readable by its owner only; the same on every node).
    /// Every gossip datagram then carries a MAC and a timestamp: datagrams from nodes without the
    /// key, altered or replayed ones are dropped and counted (`mosctl status --json`). Without a
    /// key, anyone who can reach the port can join: use only on a trusted network.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// Reads and checks the cluster key file.
fn read_key(path: &std::path::Path) -> Result<mos_proto::auth::ClusterKey, String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if md.mode() & 0o077 != 0 {
        return Err(format!("the key file {} is readable by others (mode {:o}): chmod 600 it", path.display(), md.mode() & 0o777));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    mos_proto::auth::ClusterKey::from_file_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// What every part of the daemon knows about this node.
#[derive(Debug)]
pub struct Node {
    pub number: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub map: NodeMap,
    pub registry: registry::Registry,
    pub gossip: gossip::Gossip,
    pub admin: admin::Switches,
    /// Cluster key checks and drop counters.
    pub guard: guard::Guard,
    /// Broadcast address for auto-discovery announcements (`--broadcast`).
    pub broadcast: Option<std::net::Ipv4Addr>,
    /// The gossip socket, for the goodbye datagrams at shutdown.
    pub leave: std::sync::Mutex<Option<std::net::UdpSocket>>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MOS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("mosd: {e}");
        let mut src = std::error::Error::source(&*e);
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // SIGTERM, SIGINT and SIGHUP are taken by one thread (blocked here, before any other thread
    // exists, so that every thread inherits the mask): mosd then leaves the way `mosctl shutdown`
    // does, sending its guests home first instead of losing them.
    let mut stop = nix::sys::signal::SigSet::empty();
    for s in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGHUP] {
        stop.add(s);
    }
    stop.thread_block()?;
    let text = std::fs::read_to_string(&args.map).map_err(|e| format!("cannot read the map {}: {e}", args.map.display()))?;
    let map = NodeMap::parse(&text)?;
    let own = map.addr_of(args.node).ok_or_else(|| format!("node {} is not in the map {}", args.node, args.map.display()))?;
    let addr = args.listen.unwrap_or(IpAddr::V4(own));
    let key = args.key.as_deref().map(read_key).transpose()?;
    let sampler = sample::Sampler::new();
    let host_ncpus = std::thread::available_parallelism().map(|n| n.get() as u16).unwrap_or(1);
    let host_speed = args.speed.unwrap_or_else(speed::calibrate);
    let (ncpus, speed) = capacity::shape(host_ncpus, host_speed, sampler.cpu_fraction());
    let shape = gossip::Shape { ncpus, speed, balance: !args.no_balance };
    let gossip = gossip::Gossip::new(args.node, addr, &map, shape, args.broadcast.is_some());
    let node = Arc::new(Node {
        number: args.node,
        addr,
        port: args.port,
        map,
        registry: registry::Registry::default(),
        gossip,
        admin: admin::Switches::default(),
        leave: std::sync::Mutex::new(None),
        broadcast: args.broadcast,
        guard: guard::Guard::new(key, args.node),
    });
    let listener =
        std::net::TcpListener::bind(SocketAddr::new(addr, args.port)).map_err(|e| format!("cannot listen on {addr}:{}: {e}", args.port))?;
    let udp =
        std::net::UdpSocket::bind(SocketAddr::new(addr, args.port)).map_err(|e| format!("cannot bind UDP {addr}:{}: {e}", args.port))?;
    // A larger receive buffer absorbs bursts (and floods) of datagrams; beyond the system's
    // rmem_max only root may go (RCVBUFFORCE); either failing leaves the default.
    if nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20)).is_err() {
        let _ = nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    }
    let control = control::bind(&args.control)?;
    tracing::info!(node = node.number, %addr, port = args.port, control = %args.control.display(), ncpus, speed, host_speed,
        cpu_quota = ?sampler.cpu_fraction(), balance = shape.balance, keyed = node.guard.keyed(),
        engine = mos_engine::native::engine_name(), "mosd up");
    let n = node.clone();
    std::thread::Builder::new().name("migration-server".into()).spawn(move || server::accept_loop(listener, n))?;
    let n = node.clone();
    if let Some(b) = args.broadcast {
        udp.set_broadcast(true).map_err(|e| format!("cannot enable broadcast on the gossip socket: {e}"))?;
        let recv = std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(b), args.port))
            .map_err(|e| format!("cannot listen for broadcasts on {b}:{}: {e}", args.port))?;
        let (send, n) = (udp.try_clone()?, node.clone());
        std::thread::Builder::new().name("discovery".into()).spawn(move || gossip::listen_broadcast(recv, send, n))?;
    }
    let leave = udp.try_clone()?;
    std::thread::Builder::new().name("gossip".into()).spawn(move || gossip::run(udp, n, sampler))?;
    *node.leave.lock().unwrap_or_else(|p| p.into_inner()) = Some(leave);
    let n = node.clone();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Ok(sig) = stop.wait() {
            tracing::info!(?sig, "stopping: guests are sent home first");
            admin::stop(&n);
        }
    })?;
    control::serve(control, node);
    Ok(())
}
