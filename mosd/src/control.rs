//! The Unix control socket: one thread per connection. mosctl sends one request and reads one
//! reply; mosrun registers its process and keeps the connection for commands.
use crate::registry::HomeProc;
use crate::Node;
use mos_proto::control::{AdminOp, AfterCheckpoint, Mode, Reply, Request, Target};
use mos_proto::frame::{self, FrameError, Kind};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `mosctl migrate` waits for a migration to finish.
const MIGRATE_WAIT: Duration = Duration::from_secs(600);

pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A socket left by a dead mosd is replaced; a live one is not.
    if UnixStream::connect(path).is_ok() {
        return Err(format!("another mosd already serves {}", path.display()));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("cannot bind the control socket {}: {e}", path.display()))?;
    // Any local user may ask; permissions are checked per request from the peer's credentials.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    Ok(l)
}

pub fn serve(l: UnixListener, node: Arc<Node>) {
    for conn in l.incoming() {
        match conn {
            Ok(c) => {
                let n = node.clone();
                let _ = std::thread::Builder::new().name("control".into()).spawn(move || {
                    if let Err(e) = handle(c, &n) {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "control accept failed"),
        }
    }
}

fn peer_uid(c: &UnixStream) -> u32 {
    nix::sys::socket::getsockopt(c, nix::sys::socket::sockopt::PeerCredentials).map(|cr| cr.uid()).unwrap_or(u32::MAX)
}

fn reply(c: &mut UnixStream, r: &Reply) -> Result<(), FrameError> {
    frame::write_msg(c, Kind::Control, r)
}

fn handle(mut c: UnixStream, node: &Node) -> Result<(), FrameError> {
    let req: Request = frame::read_frame(&mut c)?.expect(Kind::Control)?;
    let uid = peer_uid(&c);
    match req {
        Request::Register { pid, uid: claimed, command, auto, mem_mb } => {
            // The registered process must be the peer's own child.
            let peer_pid = nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials).map(|cr| cr.pid()).unwrap_or(0);
            let ppid = mos_engine::procfs::stat(nix::unistd::Pid::from_raw(pid as i32))
                .ok()
                .and_then(|s| s.get(4).and_then(|v| v.parse::<i32>().ok()))
                .unwrap_or(-1);
            // Or a child forked by a registered process of the same user while it ran away: its
            // deputy is a fork of that process's deputy, supervised by a mosrun of its own.
            let forked = ppid > 0 && node.registry.home_uid(ppid as u32) == Some(claimed);
            if (ppid != peer_pid && !forked) || (uid != 0 && uid != claimed) {
                return reply(&mut c, &Reply::Error { message: format!("process {pid} is not a child of the registering mosrun") });
            }
            let writer = Arc::new(Mutex::new(c.try_clone()?));
            node.registry.add_home(
                pid,
                HomeProc {
                    uid: claimed,
                    command: command.clone(),
                    node: node.number,
                    mosrun: writer,
                    last: None,
                    auto,
                    mem_mb,
                    since: None,
                },
            );
            tracing::info!(pid, %command, "registered");
            reply(&mut c, &Reply::Registered { node: node.number })?;
            let r = mosrun_loop(&mut c, node, pid);
            node.registry.remove_home(pid);
            node.registry.supervisor_gone(pid);
            tracing::info!(pid, "supervisor gone");
            r
        }
        Request::Ps => reply(&mut c, &Reply::Ps { processes: node.registry.rows(node.number) }),
        Request::Status => reply(&mut c, &Reply::Status { nodes: node.gossip.view(crate::status::this_node(node)) }),
        Request::Migrate { pid, target } => {
            let r = migrate(node, pid, &target, Mode::PreCopy, uid);
            reply(&mut c, &r)
        }
        Request::MigrateMode { pid, target, mode } => {
            let r = migrate(node, pid, &target, mode, uid);
            reply(&mut c, &r)
        }
        Request::Whois { name } => match node.gossip.resolve(&node.map, &name) {
            Some((n, a)) => reply(&mut c, &Reply::Whois { node: n, address: a.to_string() }),
            None => reply(&mut c, &Reply::Error { message: format!("`{name}` is not a node number or address in the map") }),
        },
        Request::BestNode { mem_mb } => {
            let n = node.gossip.best_node(mem_mb);
            match node.gossip.resolve(&node.map, &n.to_string()) {
                Some((_, a)) => reply(&mut c, &Reply::Whois { node: n, address: a.to_string() }),
                None => reply(&mut c, &Reply::Whois { node: node.number, address: node.addr.to_string() }),
            }
        }
        Request::Admin { op } => {
            if uid != 0 {
                return reply(&mut c, &Reply::Error { message: format!("permission denied: `mosctl {op:?}` needs root") });
            }
            let r = crate::admin::run(node, op);
            let stop = op == AdminOp::Shutdown && r == Reply::Ok;
            reply(&mut c, &r)?;
            if stop {
                tracing::info!("shut down: guests expelled, own processes home");
                crate::admin::stop(node);
            }
            Ok(())
        }
        Request::Checkpoint { pid, file, then } => {
            let r = checkpoint(node, pid, file, then, uid);
            reply(&mut c, &r)
        }
        Request::Ticket => {
            let cr = nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials);
            let r = match cr.map_err(|e| e.to_string()).and_then(|cr| node.guard.issue(cr.uid(), cr.gid())) {
                Ok(credential) => Reply::Ticket { credential },
                Err(e) => Reply::Error { message: format!("cannot issue a ticket: {e}") },
            };
            reply(&mut c, &r)
        }
        Request::CommandDone { .. } | Request::Moved { .. } | Request::CheckpointDone { .. } => {
            reply(&mut c, &Reply::Error { message: "this request is only valid from a registered mosrun".into() })
        }
    }
}

fn mosrun_loop(c: &mut UnixStream, node: &Node, pid: u32) -> Result<(), FrameError> {
    loop {
        let req: Request = frame::read_frame(c)?.expect(Kind::Control)?;
        match req {
            Request::CommandDone { id, result } => node.registry.command_done(pid, id, result),
            Request::CheckpointDone { id, result } => node.registry.checkpoint_done(id, result),
            Request::Moved { node: to } => {
                let to = if to == 0 { node.number } else { to };
                tracing::info!(pid, node = to, "process moved");
                node.registry.moved(pid, to);
            }
            other => tracing::warn!(?other, pid, "unexpected request from mosrun"),
        }
    }
}

/// Resolves a target named by number, address or "home".
pub fn resolve(node: &Node, target: &str) -> Result<Target, String> {
    if target == "home" {
        return Ok(Target::Home);
    }
    let (n, a) = node
        .gossip
        .resolve(&node.map, target)
        .ok_or_else(|| format!("unknown node `{target}`: not a node number or address in the map or known by gossip"))?;
    if n == node.number {
        return Ok(Target::Home);
    }
    Ok(Target::Node { node: n, addr: format!("{a}:{}", node.port) })
}

fn migrate(node: &Node, pid: u32, target: &str, mode: Mode, uid: u32) -> Reply {
    let t = match resolve(node, target) {
        Ok(t) => t,
        Err(message) => return Reply::Error { message },
    };
    let rx = match node.registry.command_migrate_mode(pid, t, mode, uid) {
        Ok(rx) => rx,
        Err(message) => return Reply::Error { message },
    };
    match rx.recv_timeout(MIGRATE_WAIT) {
        Ok(Ok(stats)) => Reply::Migrated { stats },
        Ok(Err(message)) => Reply::Error { message },
        Err(_) => Reply::Error { message: format!("no answer from the supervisor of {pid}") },
    }
}

fn checkpoint(node: &Node, pid: u32, file: Option<String>, then: AfterCheckpoint, uid: u32) -> Reply {
    if file.as_deref().is_some_and(|f| !f.starts_with('/')) {
        return Reply::Error { message: "the checkpoint file must be an absolute path".into() };
    }
    let rx = match node.registry.command_checkpoint(pid, file, then, uid) {
        Ok(rx) => rx,
        Err(message) => return Reply::Error { message },
    };
    match rx.recv_timeout(MIGRATE_WAIT) {
        Ok(Ok(done)) => Reply::Checkpointed(done),
        Ok(Err(message)) => Reply::Error { message },
        Err(_) => Reply::Error { message: format!("no answer from the supervisor of {pid}") },
    }
}
