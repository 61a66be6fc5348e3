//! The gossip datagram codec.
//!
//! A datagram is a 12-byte header — magic `b"MOSG"`, version `u16`, kind `u16`, body length `u32`
//! (all big-endian) — followed by a postcard body. A gossip body is `(from, count)` followed by
//! `count` entries, decoded one by one after `count` has been checked against [`MAX_ENTRIES`] and
//! the bytes present, so a hostile datagram can neither make the decoder panic nor allocate more
//! than [`MAX_ENTRIES`] entries. Entries carry their *age*, not absolute times: `origin_ms` is
//! only ever compared with other readings of the same origin's clock.

use serde::{Deserialize, Serialize};

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"MOSG";
/// Wire version.
pub const VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest datagram accepted or produced.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Largest number of entries in one gossip datagram.
pub const MAX_ENTRIES: usize = 256;
/// Smallest postcard encoding of an [`Entry`] (one byte per field).
const MIN_ENTRY_LEN: usize = 12;

/// Bits of [`Entry::flags`].
pub mod flags {
    /// The node's processes are frozen (MOSIX freeze).
    pub const FROZEN: u8 = 1;
    /// The node accepts no guest processes (`mosctl block`).
    pub const BLOCKED: u8 = 2;
    /// The node is leaving the cluster.
    pub const LEAVING: u8 = 4;
}

/// What a node says about itself; relayed unchanged except `age_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Node number (MOSIX map numbering, 1-based).
    pub node: u32,
    /// IPv4 address, host order.
    pub addr: u32,
    /// When the origin created this entry, on the origin's own clock (ms).
    pub origin_ms: u64,
    /// Age of the entry when the datagram was sent (ms).
    pub age_ms: u32,
    /// Smoothed load, speed-normalized, fixed point ([`crate::load::LOAD_SCALE`] = one process
    /// on one standard CPU).
    pub load: u32,
    /// CPU speed in MOSIX-style units ([`crate::load::STD_SPEED`] = standard).
    pub speed: u32,
    /// Number of CPUs.
    pub ncpus: u16,
    /// Free memory, MiB.
    pub mem_free_mb: u32,
    /// Total memory, MiB.
    pub mem_total_mb: u32,
    /// Processes running there (local and guests).
    pub procs: u32,
    /// Of which guests.
    pub guests: u32,
    /// [`flags`].
    pub flags: u8,
}

/// A decoded datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A window of the sender's newest entries.
    Gossip {
        /// Sender node number.
        from: u32,
        /// At most [`MAX_ENTRIES`].
        entries: Vec<Entry>,
    },
    /// A direct liveness probe.
    Probe {
        /// Sender node number.
        from: u32,
        /// Echoed in the ack.
        seq: u32,
    },
    /// Answer to a probe, with the responder's fresh entry.
    Ack {
        /// Sender node number.
        from: u32,
        /// The probe's sequence number.
        seq: u32,
        /// The responder's own entry (age 0).
        entry: Entry,
    },
    /// "I am here": startup, periodic re-announce, discovery.
    Join {
        /// The announcer's own entry.
        entry: Entry,
    },
    /// Orderly departure.
    Leave {
        /// Leaving node number.
        node: u32,
        /// Its address.
        addr: u32,
    },
}

/// Message kinds on the wire.
pub mod kind {
    /// [`super::Message::Gossip`]
    pub const GOSSIP: u16 = 1;
    /// [`super::Message::Probe`]
    pub const PROBE: u16 = 2;
    /// [`super::Message::Ack`]
    pub const ACK: u16 = 3;
    /// [`super::Message::Join`]
    pub const JOIN: u16 = 4;
    /// [`super::Message::Leave`]
    pub const LEAVE: u16 = 5;
}

/// Why a datagram was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    /// Not `MOSG`.
    #[error("bad magic")]
    BadMagic,
    /// Unknown version.
    #[error("unsupported version {0}")]
    BadVersion(u16),
    /// Unknown kind.
    #[error("unknown message kind {0}")]
    BadKind(u16),
    /// Header length disagrees with the datagram.
    #[error("length field {declared} but {actual} body bytes")]
    LengthMismatch {
        /// From the header.
        declared: u32,
        /// Present.
        actual: usize,
    },
    /// More than [`MAX_ENTRIES`] entries, or more than the bytes can hold.
    #[error("too many entries ({0})")]
    TooManyEntries(usize),
    /// Bytes left after the body.
    #[error("trailing bytes after the body")]
    Trailing,
    /// Malformed postcard body.
    #[error("body: {0}")]
    Body(#[from] postcard::Error),
}

/// Encode `msg` into one datagram.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    let (k, mut out) = match msg {
        Message::Gossip { from, entries } => {
            if entries.len() > MAX_ENTRIES {
                return Err(WireError::TooManyEntries(entries.len()));
            }
            let mut out = postcard::to_extend(&(*from, entries.len() as u16), out)?;
            for e in entries {
                out = postcard::to_extend(e, out)?;
            }
            (kind::GOSSIP, out)
        }
        Message::Probe { from, seq } => (kind::PROBE, postcard::to_extend(&(*from, *seq), out)?),
        Message::Ack { from, seq, entry } => (kind::ACK, postcard::to_extend(&(*from, *seq, entry), out)?),
        Message::Join { entry } => (kind::JOIN, postcard::to_extend(entry, out)?),
        Message::Leave { node, addr } => (kind::LEAVE, postcard::to_extend(&(*node, *addr), out)?),
    };
    if out.len() > MAX_DATAGRAM {
        return Err(WireError::TooLong(out.len()));
    }
    let body_len = (out.len() - HEADER_LEN) as u32;
    out[6..8].copy_from_slice(&k.to_be_bytes());
    out[8..12].copy_from_slice(&body_len.to_be_bytes());
    Ok(out)
}

fn finish<T>(value: T, rest: &[u8]) -> Result<T, WireError> {
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(WireError::Trailing)
    }
}

/// Decode one datagram. Never panics; allocates at most [`MAX_ENTRIES`] entries, after checking.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::TooLong(bytes.len()));
    }
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::TooShort(bytes.len()));
    };
    if header[0..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let k = u16::from_be_bytes([header[6], header[7]]);
    let declared = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if declared as usize != body.len() {
        return Err(WireError::LengthMismatch { declared, actual: body.len() });
    }
    match k {
        kind::GOSSIP => {
            let ((from, count), mut rest): ((u32, u16), &[u8]) = postcard::take_from_bytes(body)?;
            let count = usize::from(count);
            if count > MAX_ENTRIES || count * MIN_ENTRY_LEN > rest.len() {
                return Err(WireError::TooManyEntries(count));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let (e, r) = postcard::take_from_bytes::<Entry>(rest)?;
                entries.push(e);
                rest = r;
            }
            finish(Message::Gossip { from, entries }, rest)
        }
        kind::PROBE => {
            let ((from, seq), rest) = postcard::take_from_bytes::<(u32, u32)>(body)?;
            finish(Message::Probe { from, seq }, rest)
        }
        kind::ACK => {
            let ((from, seq, entry), rest) = postcard::take_from_bytes::<(u32, u32, Entry)>(body)?;
            finish(Message::Ack { from, seq, entry }, rest)
        }
        kind::JOIN => {
            let (entry, rest) = postcard::take_from_bytes::<Entry>(body)?;
            finish(Message::Join { entry }, rest)
        }
        kind::LEAVE => {
            let ((node, addr), rest) = postcard::take_from_bytes::<(u32, u32)>(body)?;
            finish(Message::Leave { node, addr }, rest)
        }
        other => Err(WireError::BadKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> Entry {
        Entry {
            node: n,
            addr: 0x7f00_0000 + n,
            origin_ms: 123_456 + u64::from(n),
            age_ms: 7,
            load: 1000,
            speed: 10_000,
            ncpus: 4,
            ..Entry::default()
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let msgs = vec![
            Message::Gossip { from: 3, entries: (1..=20).map(entry).collect() },
            Message::Probe { from: 1, seq: 9 },
            Message::Ack { from: 2, seq: 9, entry: entry(2) },
            Message::Join { entry: entry(5) },
            Message::Leave { node: 5, addr: 0x7f00_0005 },
        ];
        for m in msgs {
            let b = encode(&m).unwrap();
            assert_eq!(&b[..4], b"MOSG");
            assert_eq!(decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn max_window_fits_in_a_datagram() {
        let e = Entry {
            origin_ms: u64::MAX,
            age_ms: u32::MAX,
            load: u32::MAX,
            speed: u32::MAX,
            ncpus: u16::MAX,
            mem_free_mb: u32::MAX,
            mem_total_mb: u32::MAX,
            procs: u32::MAX,
            guests: u32::MAX,
            flags: 255,
            node: u32::MAX,
            addr: u32::MAX,
        };
        let m = Message::Gossip { from: u32::MAX, entries: vec![e; MAX_ENTRIES] };
        let b = encode(&m).unwrap();
        assert!(b.len() <= MAX_DATAGRAM, "{}", b.len());
        assert_eq!(decode(&b).unwrap(), m);
        let too_many = Message::Gossip { from: 1, entries: vec![e; MAX_ENTRIES + 1] };
        assert!(matches!(encode(&too_many), Err(WireError::TooManyEntries(_))));
    }

    #[test]
    fn refuses_bad_headers() {
        let b = encode(&Message::Probe { from: 1, seq: 2 }).unwrap();
        assert!(matches!(decode(&b[..5]), Err(WireError::TooShort(5))));
        let mut x = b.clone();
        x[0] = b'X';
        assert!(matches!(decode(&x), Err(WireError::BadMagic)));
        let mut x = b.clone();
        x[5] = 9;
        assert!(matches!(decode(&x), Err(WireError::BadVersion(_))));
        let mut x = b.clone();
        x[7] = 99;
        assert!(matches!(decode(&x), Err(WireError::BadKind(99))));
        let mut x = b.clone();
        x.push(0);
        assert!(matches!(decode(&x), Err(WireError::LengthMismatch { .. })));
        // A gossip header claiming 65535 entries in a few bytes is refused before allocating.
        let mut g = encode(&Message::Gossip { from: 1, entries: vec![] }).unwrap();
        g.truncate(HEADER_LEN);
        g.extend_from_slice(&[1, 0xff, 0xff, 0x03]);
        let len = (g.len() - HEADER_LEN) as u32;
        g[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(decode(&g), Err(WireError::TooManyEntries(65535))));
    }
}
