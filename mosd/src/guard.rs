//! The node's door: seals outgoing gossip datagrams with the cluster key and checks incoming ones
//! (MAC, replay window), counts what it drops, and limits the log lines a peer can cause.
use mos_proto::auth::{ClusterKey, Replay, Stamper};
use mos_proto::secure::Credential;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// At most one log line per peer address per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Peers remembered for log limiting (beyond: the map is cleared).
const LOG_PEERS: usize = 4096;

#[derive(Debug)]
pub struct Guard {
    key: Option<ClusterKey>,
    me: u32,
    stamper: Mutex<Stamper>,
    replay: Mutex<Replay>,
    bad_datagrams: AtomicU64,
    bad_connections: AtomicU64,
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Guard {
    pub fn new(key: Option<ClusterKey>, me: u32) -> Guard {
        Guard {
            key,
            me,
            stamper: Mutex::default(),
            replay: Mutex::default(),
            bad_datagrams: AtomicU64::new(0),
            bad_connections: AtomicU64::new(0),
            logged: Mutex::default(),
        }
    }

    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }

    pub fn key(&self) -> Option<&ClusterKey> {
        self.key.as_ref()
    }

    /// A credential for a secure connection by user `uid`/`gid` of this node; None without a key.
    pub fn issue(&self, uid: u32, gid: u32) -> Result<Option<Credential>, String> {
        let Some(k) = &self.key else { return Ok(None) };
        let mut nonce = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut nonce))
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        Ok(Some(k.issue(uid, gid, self.me, wall_ms(), nonce)))
    }

    /// The datagram to send for the brain's `body`.
    pub fn outgoing(&self, body: Vec<u8>) -> Vec<u8> {
        match &self.key {
            None => body,
            Some(k) => {
                let stamp = self.stamper.lock().unwrap_or_else(|p| p.into_inner()).next(wall_ms());
                k.seal(self.me, stamp, &body)
            }
        }
    }

    /// The brain's datagram inside `d` from `from`, or None (counted, logged at a limited rate).
    pub fn incoming<'a>(&self, from: IpAddr, d: &'a [u8]) -> Option<&'a [u8]> {
        let Some(k) = &self.key else { return Some(d) };
        let r = k.open(d).and_then(|(sender, stamp, body)| {
            self.replay.lock().unwrap_or_else(|p| p.into_inner()).check(sender, stamp, wall_ms()).map(|()| body)
        });
        match r {
            Ok(body) => Some(body),
            Err(e) => {
                self.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                self.note(from, &format!("gossip datagram dropped: {e}"));
                None
            }
        }
    }

    /// A connection or datagram the brain itself refused (undecodable without a key).
    pub fn count_bad_datagram(&self) {
        self.bad_datagrams.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection dropped before it carried a valid migration.
    pub fn bad_connection(&self, from: IpAddr, why: &str) {
        self.bad_connections.fetch_add(1, Ordering::Relaxed);
        self.note(from, &format!("connection dropped: {why}"));
    }

    /// (datagrams, connections) dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.bad_datagrams.load(Ordering::Relaxed), self.bad_connections.load(Ordering::Relaxed))
    }

    /// Logs `what` about `peer` unless a line about it was logged in the last [`LOG_EVERY`].
    fn note(&self, peer: IpAddr, what: &str) {
        let mut l = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if l.get(&peer).is_some_and(|t| now.duration_since(*t) < LOG_EVERY) {
            return;
        }
        if l.len() >= LOG_PEERS {
            l.clear();
        }
        l.insert(peer, now);
        let (d, c) = self.counts();
        tracing::warn!(%peer, dropped_datagrams = d, dropped_connections = c, "{what} (further lines about this peer suppressed for 10 s)");
    }
}
