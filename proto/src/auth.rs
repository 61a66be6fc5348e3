//! Cluster key and the authenticated envelope of gossip datagrams.
//!
//! With a cluster key (`mosd --key FILE`) every gossip datagram is sent as
//!
//! ```text
//! "MOSA" | version u16 BE | reserved u16 (0) | sender node u32 BE | stamp u64 BE | mac [16] | body
//! ```
//!
//! `body` is the brain's datagram ("MOSG", brain/src/wire.rs). `mac` is HMAC-SHA256 (truncated to
//! 128 bits) under the cluster's gossip key over everything before it and the body. `stamp` is the
//! sender's wall-clock time in milliseconds shifted left by 12 bits plus a counter, strictly
//! increasing per sender; the receiver ([`Replay`]) refuses a stamp that is not newer than the
//! last one it accepted from that sender, or more than [`MAX_SKEW_MS`] away from its own clock.
//! Pure functions: the daemon passes the clock in.
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const MAGIC: [u8; 4] = *b"MOSA";
pub const VERSION: u16 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 4 + 2 + 2 + 4 + 8 + 16;
const MAC_AT: usize = HEADER_LEN - 16;
/// Largest clock difference accepted between sender and receiver.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Senders remembered for replay protection; beyond this the oldest are forgotten (a forgotten
/// sender's old datagrams are still refused by the clock window).
pub const MAX_SENDERS: usize = 65_536;
/// Smallest key file accepted, bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("too short for an authenticated datagram")]
    Short,
    #[error("not an authenticated MOS datagram (bad magic)")]
    Magic,
    #[error("unsupported envelope version {0}")]
    Version(u16),
    #[error("bad MAC (sender without the cluster key, or altered in transit)")]
    Mac,
    #[error("replayed or out-of-order datagram")]
    Replay,
    #[error("timestamp {0} ms away from this node's clock")]
    Skew(u64),
}

/// The cluster key, as derived from the key file.
#[derive(Clone)]
pub struct ClusterKey {
    gossip: [u8; 32],
    /// Keys the pre-shared keys of migration and deputy connections ([`crate::secure`]).
    streams: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Derives the keys from the key file's bytes (surrounding whitespace ignored).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<ClusterKey, String> {
        let s = bytes.trim_ascii();
        if s.len() < MIN_KEY_LEN {
            return Err(format!("the cluster key must have at least {MIN_KEY_LEN} bytes (it has {})", s.len()));
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(label);
            h.update(s);
            h.finalize().into()
        };
        Ok(ClusterKey { gossip: derive(b"MOS cluster key v1: gossip\0"), streams: derive(b"MOS cluster key v1: streams\0") })
    }

    pub(crate) fn streams_key(&self) -> &[u8; 32] {
        &self.streams
    }

    fn mac(&self, head: &[u8], body: &[u8]) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.gossip).expect("HMAC takes any key length");
        m.update(head);
        m.update(body);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Wraps `body` from node `sender` with `stamp` (see [`Stamper`]).
    pub fn seal(&self, sender: u32, stamp: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&sender.to_be_bytes());
        out.extend_from_slice(&stamp.to_be_bytes());
        let mac = self.mac(&out, body);
        out.extend_from_slice(&mac);
        out.extend_from_slice(body);
        out
    }

    /// Checks the envelope's MAC; returns (sender, stamp, body). Replay is checked by [`Replay`].
    pub fn open<'a>(&self, d: &'a [u8]) -> Result<(u32, u64, &'a [u8]), AuthError> {
        if d.len() < HEADER_LEN {
            return Err(AuthError::Short);
        }
        if d[..4] != MAGIC {
            return Err(AuthError::Magic);
        }
        let version = u16::from_be_bytes([d[4], d[5]]);
        if version != VERSION {
            return Err(AuthError::Version(version));
        }
        let (head, rest) = d.split_at(MAC_AT);
        let (mac, body) = rest.split_at(16);
        // Constant-time comparison: a timing difference must not reveal how much of a forged MAC matched.
        let want = self.mac(head, body);
        if want.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(AuthError::Mac);
        }
        let sender = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
        let stamp = u64::from_be_bytes(head[12..20].try_into().expect("8 bytes"));
        Ok((sender, stamp, body))
    }
}

/// Strictly increasing stamps for the datagrams this node sends: wall-clock ms << 12, plus a
/// counter when several are sent within one millisecond.
#[derive(Debug, Default)]
pub struct Stamper {
    last: u64,
}

impl Stamper {
    pub fn next(&mut self, now_ms: u64) -> u64 {
        self.last = (now_ms << 12).max(self.last + 1);
        self.last
    }
}

/// The receiver's replay window: the newest stamp accepted from each sender.
#[derive(Debug, Default)]
pub struct Replay {
    last: HashMap<u32, u64>,
}

impl Replay {
    /// Accepts `stamp` from `sender` at local time `now_ms` if it is newer than the last one and
    /// within the clock window.
    pub fn check(&mut self, sender: u32, stamp: u64, now_ms: u64) -> Result<(), AuthError> {
        let ms = stamp >> 12;
        let skew = ms.abs_diff(now_ms);
        if skew > MAX_SKEW_MS {
            return Err(AuthError::Skew(skew));
        }
        if self.last.get(&sender).is_some_and(|l| stamp <= *l) {
            return Err(AuthError::Replay);
        }
        if self.last.len() >= MAX_SENDERS && !self.last.contains_key(&sender) {
            // Forget the sender seen longest ago (its old stamps fall out of the clock window).
            if let Some((&old, _)) = self.last.iter().min_by_key(|(_, s)| **s) {
                self.last.remove(&old);
            }
        }
        self.last.insert(sender, stamp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::from_file_bytes(s.as_bytes()).unwrap()
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_key_only() {
        let k = key("correct horse battery staple\n");
        let d = k.seal(3, 42 << 12, b"MOSG body");
        assert_eq!(d.len(), HEADER_LEN + 9);
        assert_eq!(k.open(&d), Ok((3, 42 << 12, &b"MOSG body"[..])));
        // Surrounding whitespace of the key file does not matter; other keys fail.
        assert!(key("  correct horse battery staple").open(&d).is_ok());
        assert_eq!(key("correct horse battery stapler").open(&d), Err(AuthError::Mac));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let k = key("0123456789abcdef0123");
        let d = k.seal(1, 7 << 12, b"payload");
        for i in 0..d.len() {
            let mut x = d.clone();
            x[i] ^= 0x01;
            assert!(k.open(&x).is_err(), "flipping byte {i} was accepted");
        }
        assert_eq!(k.open(&d[..HEADER_LEN - 1]), Err(AuthError::Short));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ClusterKey::from_file_bytes(b"short\n").is_err());
    }

    #[test]
    fn replay_and_skew() {
        let mut st = Stamper::default();
        let (a, b) = (st.next(10_000), st.next(10_000));
        assert!(b > a);
        let mut r = Replay::default();
        assert_eq!(r.check(1, a, 10_000), Ok(()));
        assert_eq!(r.check(1, a, 10_000), Err(AuthError::Replay));
        assert_eq!(r.check(1, b, 10_001), Ok(()));
        assert_eq!(r.check(2, a, 10_000), Ok(()), "another sender has its own window");
        assert!(matches!(r.check(3, st.next(10_000), 10_000 + MAX_SKEW_MS + 1), Err(AuthError::Skew(_))));
    }

    #[test]
    fn golden_envelope() {
        let k = key("0123456789abcdef");
        let d = k.seal(2, 0x0102_0304_0506_0708, b"x");
        let hex: String = d[..20].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "4d4f5341000100000000000201020304050607 08".replace(' ', ""));
    }
}
