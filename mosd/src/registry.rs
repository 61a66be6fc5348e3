//! The processes this node knows: its own (home here, supervised by a mosrun) and its guests.
use mos_engine::guest::Orders;
use mos_proto::control::{AfterCheckpoint, Checkpointed, Command, Mode, ProcRow, Target};
use mos_proto::migration::Stats;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A process whose home is this node.
#[derive(Debug)]
pub struct HomeProc {
    pub uid: u32,
    pub command: String,
    /// Node it runs on now (this node's number when home).
    pub node: u32,
    /// Connection to its mosrun, for commands.
    pub mosrun: Arc<Mutex<UnixStream>>,
    pub last: Option<Stats>,
    /// The balancer may move it (`mosrun -l`).
    pub auto: bool,
    /// Memory it declared (`mosrun -m`), MiB.
    pub mem_mb: u32,
    /// When it last moved (None: never moved, free to go at once).
    pub since: Option<Instant>,
}

/// A process hosted here for another node.
#[derive(Debug, Clone)]
pub struct GuestRow {
    pub home_node: u32,
    pub home_pid: u32,
    pub local_pid: u32,
    pub command: String,
    pub stats: Stats,
    /// Orders for its host loop (send home, move on).
    pub orders: Arc<Orders>,
    /// When it arrived.
    pub since: Instant,
}

/// What the balancer needs to know of a process running on this node now.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// Its pid on this node (the home pid for own processes at home).
    pub pid: u32,
    pub guest: bool,
    pub auto: bool,
    pub mem_mb: u32,
    /// When it arrived here (None: started here and never moved).
    pub since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    home: HashMap<u32, HomeProc>,
    guests: HashMap<u32, GuestRow>,
    waiters: HashMap<u64, Sender<Result<Stats, String>>>,
    next_id: u64,
    /// Checkpoint commands waiting for their mosrun's answer: id → (home pid, waiter).
    checkpoint_waiters: HashMap<u64, (u32, Sender<Result<Checkpointed, String>>)>,
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_home(&self, pid: u32, p: HomeProc) {
        self.lock().home.insert(pid, p);
    }
    pub fn remove_home(&self, pid: u32) {
        self.lock().home.remove(&pid);
    }
    pub fn moved(&self, pid: u32, node: u32) {
        if let Some(p) = self.lock().home.get_mut(&pid) {
            p.node = node;
            p.since = Some(Instant::now());
        }
    }
    pub fn add_guest(&self, g: GuestRow) {
        self.lock().guests.insert(g.local_pid, g);
    }
    pub fn remove_guest(&self, local_pid: u32) {
        self.lock().guests.remove(&local_pid);
    }
    /// The processes running on this node now: own ones at home, and guests.
    pub fn locals(&self, this_node: u32) -> Vec<Local> {
        let i = self.lock();
        let own = i.home.iter().filter(|(_, p)| p.node == this_node).map(|(pid, p)| Local {
            pid: *pid,
            guest: false,
            auto: p.auto,
            mem_mb: p.mem_mb,
            since: p.since,
        });
        let guests = i.guests.values().map(|g| Local { pid: g.local_pid, guest: true, auto: true, mem_mb: 0, since: Some(g.since) });
        own.chain(guests).collect()
    }

    /// The order channel of the guest whose local pid is `local_pid`.
    pub fn guest_orders(&self, local_pid: u32) -> Option<Arc<Orders>> {
        self.lock().guests.get(&local_pid).map(|g| g.orders.clone())
    }

    /// The order channel of the guest that is process `home_pid` of node `home_node`.
    pub fn guest_by_home(&self, home_node: u32, home_pid: u32) -> Option<(u32, Arc<Orders>)> {
        self.lock().guests.values().find(|g| g.home_node == home_node && g.home_pid == home_pid).map(|g| (g.local_pid, g.orders.clone()))
    }

    /// The uid of own process `pid`, if it is registered here.
    pub fn home_uid(&self, pid: u32) -> Option<u32> {
        self.lock().home.get(&pid).map(|p| p.uid)
    }

    /// Every guest's order channel.
    pub fn all_guest_orders(&self) -> Vec<Arc<Orders>> {
        self.lock().guests.values().map(|g| g.orders.clone()).collect()
    }

    /// Home pids of own processes running elsewhere now.
    pub fn away(&self, this_node: u32) -> Vec<u32> {
        self.lock().home.iter().filter(|(_, p)| p.node != this_node).map(|(pid, _)| *pid).collect()
    }

    /// Is `pid` an own process running here now?
    pub fn is_home_here(&self, pid: u32, this_node: u32) -> bool {
        self.lock().home.get(&pid).is_some_and(|p| p.node == this_node)
    }

    pub fn counts(&self) -> (u32, u32) {
        let i = self.lock();
        (i.home.len() as u32, i.guests.len() as u32)
    }

    pub fn rows(&self, this_node: u32) -> Vec<ProcRow> {
        let i = self.lock();
        let mut rows: Vec<ProcRow> = i
            .home
            .iter()
            .map(|(pid, p)| ProcRow {
                pid: *pid,
                home: this_node,
                node: p.node,
                command: p.command.clone(),
                guest: false,
                local_pid: None,
                last_migration: p.last.clone(),
            })
            .collect();
        rows.extend(i.guests.values().map(|g| ProcRow {
            pid: g.home_pid,
            home: g.home_node,
            node: this_node,
            command: g.command.clone(),
            guest: true,
            local_pid: Some(g.local_pid),
            last_migration: Some(g.stats.clone()),
        }));
        rows.sort_by_key(|r| (r.guest, r.pid));
        rows
    }

    /// Sends a migrate command to the process's mosrun. Returns the receiver of the result.
    /// `requester_uid` must own the process (or be root).
    pub fn command_migrate(&self, pid: u32, target: Target, requester_uid: u32) -> Result<Receiver<Result<Stats, String>>, String> {
        self.command_migrate_mode(pid, target, Mode::PreCopy, requester_uid)
    }

    /// Like [`Registry::command_migrate`], moving out of home by `mode`.
    pub fn command_migrate_mode(
        &self,
        pid: u32,
        target: Target,
        mode: Mode,
        requester_uid: u32,
    ) -> Result<Receiver<Result<Stats, String>>, String> {
        let mut i = self.lock();
        let conn = owned_supervisor(&i, pid, requester_uid)?;
        i.next_id += 1;
        let id = i.next_id;
        let (tx, rx) = mpsc::channel();
        i.waiters.insert(id, tx);
        drop(i);
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = mos_proto::frame::write_msg(&mut *c, mos_proto::Kind::Control, &Command::MigrateMode { id, target, mode }) {
            self.lock().waiters.remove(&id);
            return Err(format!("the supervisor of {pid} is gone: {e}"));
        }
        Ok(rx)
    }

    pub fn command_done(&self, pid: u32, id: u64, result: Result<Stats, String>) {
        let mut i = self.lock();
        if let (Ok(s), Some(p)) = (&result, i.home.get_mut(&pid)) {
            p.last = Some(s.clone());
        }
        if let Some(tx) = i.waiters.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Sends a checkpoint command to the process's mosrun (same permission rule as
    /// [`command_migrate`](Self::command_migrate)). Returns the receiver of the result.
    pub fn command_checkpoint(
        &self,
        pid: u32,
        file: Option<String>,
        then: AfterCheckpoint,
        requester_uid: u32,
    ) -> Result<Receiver<Result<Checkpointed, String>>, String> {
        let mut i = self.lock();
        let conn = owned_supervisor(&i, pid, requester_uid)?;
        i.next_id += 1;
        let id = i.next_id;
        let (tx, rx) = mpsc::channel();
        i.checkpoint_waiters.insert(id, (pid, tx));
        drop(i);
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = mos_proto::frame::write_msg(&mut *c, mos_proto::Kind::Control, &Command::Checkpoint { id, file, then }) {
            self.lock().checkpoint_waiters.remove(&id);
            return Err(format!("the supervisor of {pid} is gone: {e}"));
        }
        Ok(rx)
    }

    pub fn checkpoint_done(&self, id: u64, result: Result<Checkpointed, String>) {
        if let Some((_, tx)) = self.lock().checkpoint_waiters.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// The mosrun of `pid` is gone: its unanswered checkpoint commands fail now.
    pub fn supervisor_gone(&self, pid: u32) {
        let mut i = self.lock();
        let ids: Vec<u64> = i.checkpoint_waiters.iter().filter(|(_, (p, _))| *p == pid).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some((_, tx)) = i.checkpoint_waiters.remove(&id) {
                let _ = tx.send(Err(format!("the supervisor of {pid} ended before the checkpoint was done")));
            }
        }
    }
}

/// The connection to the mosrun of own process `pid`, if `requester_uid` owns it or is root.
fn owned_supervisor(i: &Inner, pid: u32, requester_uid: u32) -> Result<Arc<Mutex<UnixStream>>, String> {
    let p = i.home.get(&pid).ok_or_else(|| format!("no MOS process with home pid {pid} on this node"))?;
    if requester_uid != 0 && requester_uid != p.uid {
        return Err(format!("permission denied: process {pid} belongs to uid {}", p.uid));
    }
    Ok(p.mosrun.clone())
}
