//! Secure streams: the TCP connections between nodes (a migration, then the deputy channel of the
//! migrated process) authenticated and encrypted with the Noise protocol, keyed by the cluster key.
//!
//! ```text
//! initiator → responder   ticket: "MOSN" | version u16 BE | reserved u16 (0) | uid u32 BE | gid u32 BE
//!                                 | node u32 BE | issued_ms u64 BE | nonce [16]          (44 bytes, clear)
//! initiator → responder   len u16 BE | Noise handshake message 1   (-> psk, e)
//! responder → initiator   len u16 BE | Noise handshake message 2   (<- e, ee)
//! then, both ways         len u16 BE | Noise transport message     (ciphertext | 16-byte tag)
//! ```
//!
//! The pattern is `NNpsk0` with the ticket as prologue and `psk = HMAC-SHA256(stream key, ticket)`,
//! where the stream key is derived from the cluster key file ([`ClusterKey::ticket_psk`]). A node's
//! mosd (root, holds the key) issues the ticket and its psk to a local mosrun for that mosrun's
//! uid and gid ([`ClusterKey::issue`]); the responder recomputes the psk from the ticket. So a
//! peer that completes the handshake either holds the cluster key or was given a ticket by a node
//! that does, and the ticket says for which user: the responder checks that the migrated process
//! belongs to that user and comes from that node. The ticket is sent in the clear (it reveals uid,
//! gid and home node number to an eavesdropper, nothing else).
//!
//! Transport messages carry at most [`MAX_PLAIN`] bytes of stream data: a larger write is cut into
//! several. [`SecureStream`] wraps any `Read + Write` and is itself `Read + Write`; its buffers
//! are bounded (two messages of ciphertext received, one of plaintext, [`TX_BATCH`] messages
//! sent) and allocated only after the handshake succeeded. Any decryption failure (a changed,
//! dropped, replayed or reordered byte) breaks the stream for good.
//!
//! Pure code: the clock and the random nonce are passed in.
use crate::auth::ClusterKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::{self, Read, Write};
use std::sync::Arc;

pub const MAGIC: [u8; 4] = *b"MOSN";
pub const VERSION: u16 = 1;
/// Bytes of a ticket on the wire.
pub const TICKET_LEN: usize = 4 + 2 + 2 + 4 + 4 + 4 + 8 + 16;
/// A ticket older (or newer) than this by the responder's clock is refused.
pub const MAX_TICKET_AGE_MS: u64 = 300_000;
/// Largest Noise message (handshake or transport), bytes.
pub const MAX_MSG: usize = 65_535;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Largest stream payload of one transport message.
pub const MAX_PLAIN: usize = MAX_MSG - TAG_LEN;
/// Largest handshake message accepted (NNpsk0's are 32 and 48 bytes).
pub const MAX_HANDSHAKE: usize = 256;
/// Transport messages encrypted into one `write` of the underlying stream at most.
pub const TX_BATCH: usize = 4;
/// The Noise protocol used (see docs/SECURITY.md for the choice of cipher).
pub const PROTOCOL: &str = SUITES[0];
/// The suites compared by `secure_bench`; the first is the one MOS uses.
pub const SUITES: [&str; 2] = ["Noise_NNpsk0_25519_AESGCM_SHA256", "Noise_NNpsk0_25519_ChaChaPoly_SHA256"];

/// Bytes of one message on the wire: length prefix and message.
const WIRE_MAX: usize = 2 + MAX_MSG;

/// Why a secure connection could not be made or went on.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("not a secure MOS connection (bad magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("unsupported secure-stream version {0}")]
    Version(u16),
    #[error("reserved ticket field is {0:#x}, must be 0")]
    Reserved(u16),
    #[error("ticket issued {0} ms away from this node's clock")]
    Stale(u64),
    #[error("handshake message of {0} bytes (at most {MAX_HANDSHAKE})")]
    HandshakeSize(usize),
    #[error("handshake failed (peer without the cluster key, or altered in transit): {0}")]
    Handshake(String),
    #[error("connection closed during the handshake")]
    Closed,
    #[error("i/o error during the handshake")]
    Io(#[from] io::Error),
}

/// Who a connection is for, as its home node's mosd vouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub uid: u32,
    pub gid: u32,
    /// Home node number of the processes moved on this connection.
    pub node: u32,
    /// Wall-clock time of issue, ms since the epoch.
    pub issued_ms: u64,
    pub nonce: [u8; 16],
}

impl Ticket {
    pub fn encode(&self) -> [u8; TICKET_LEN] {
        let mut b = [0u8; TICKET_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[8..12].copy_from_slice(&self.uid.to_be_bytes());
        b[12..16].copy_from_slice(&self.gid.to_be_bytes());
        b[16..20].copy_from_slice(&self.node.to_be_bytes());
        b[20..28].copy_from_slice(&self.issued_ms.to_be_bytes());
        b[28..44].copy_from_slice(&self.nonce);
        b
    }

    /// Decodes a ticket (the clock is checked by [`respond`]).
    pub fn decode(b: &[u8; TICKET_LEN]) -> Result<Ticket, SecureError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(SecureError::Magic(magic));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(SecureError::Version(version));
        }
        let reserved = u16::from_be_bytes([b[6], b[7]]);
        if reserved != 0 {
            return Err(SecureError::Reserved(reserved));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[28..44]);
        Ok(Ticket {
            uid: u32_at(8),
            gid: u32_at(12),
            node: u32_at(16),
            issued_ms: u64::from_be_bytes(b[20..28].try_into().expect("8 bytes")),
            nonce,
        })
    }
}

/// A ticket and its pre-shared key: what a mosrun needs to open a secure connection. The key is
/// secret (mosd hands it only to the ticket's uid, over the local control socket).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub ticket: Ticket,
    pub psk: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("ticket", &self.ticket).field("psk", &"..").finish()
    }
}

impl ClusterKey {
    /// The pre-shared key of a connection opened with `ticket`.
    pub fn ticket_psk(&self, ticket: &Ticket) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.streams_key()).expect("HMAC takes any key length");
        m.update(&ticket.encode());
        m.finalize().into_bytes().into()
    }

    /// A credential for user `uid`/`gid` of node `node`, at wall-clock `now_ms`, with a random `nonce`.
    pub fn issue(&self, uid: u32, gid: u32, node: u32, now_ms: u64, nonce: [u8; 16]) -> Credential {
        let ticket = Ticket { uid, gid, node, issued_ms: now_ms, nonce };
        Credential { ticket, psk: self.ticket_psk(&ticket) }
    }
}

fn noise_err(e: snow::Error) -> SecureError {
    SecureError::Handshake(e.to_string())
}

fn write_msg<S: Write>(s: &mut S, m: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(2 + m.len());
    b.extend_from_slice(&(m.len() as u16).to_be_bytes());
    b.extend_from_slice(m);
    s.write_all(&b)
}

fn read_exact_or_closed<S: Read>(s: &mut S, b: &mut [u8]) -> Result<(), SecureError> {
    s.read_exact(b).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { SecureError::Closed } else { SecureError::Io(e) })
}

fn read_handshake_msg<S: Read>(s: &mut S) -> Result<Vec<u8>, SecureError> {
    let mut l = [0u8; 2];
    read_exact_or_closed(s, &mut l)?;
    let len = u16::from_be_bytes(l) as usize;
    if len > MAX_HANDSHAKE {
        return Err(SecureError::HandshakeSize(len));
    }
    let mut m = vec![0u8; len];
    read_exact_or_closed(s, &mut m)?;
    Ok(m)
}

/// Opens a secure connection over `s` (the initiator: the side that moves a process out).
pub fn initiate<S: Read + Write>(s: S, cred: &Credential) -> Result<SecureStream<S>, SecureError> {
    initiate_with(s, cred, PROTOCOL)
}

/// [`initiate`] with another Noise suite (for benchmarks; both sides must use the same).
pub fn initiate_with<S: Read + Write>(mut s: S, cred: &Credential, suite: &str) -> Result<SecureStream<S>, SecureError> {
    let ticket = cred.ticket.encode();
    let params = suite.parse().map_err(noise_err)?;
    let mut hs = snow::Builder::new(params)
        .prologue(&ticket)
        .and_then(|b| b.psk(0, &cred.psk))
        .and_then(|b| b.build_initiator())
        .map_err(noise_err)?;
    let mut m = [0u8; MAX_HANDSHAKE];
    let n = hs.write_message(&[], &mut m).map_err(noise_err)?;
    let mut first = Vec::with_capacity(TICKET_LEN + 2 + n);
    first.extend_from_slice(&ticket);
    first.extend_from_slice(&(n as u16).to_be_bytes());
    first.extend_from_slice(&m[..n]);
    s.write_all(&first)?;
    s.flush()?;
    let reply = read_handshake_msg(&mut s)?;
    hs.read_message(&reply, &mut m).map_err(noise_err)?;
    Ok(SecureStream::new(s, hs.into_stateless_transport_mode().map_err(noise_err)?))
}

/// Accepts a secure connection over `s` (the responder: the node a process moves to), checking
/// the ticket against `key` and the clock `now_ms`. Returns the stream and the ticket it was
/// opened with. Nothing is allocated for the stream before the handshake succeeded.
pub fn respond<S: Read + Write>(s: S, key: &ClusterKey, now_ms: u64) -> Result<(SecureStream<S>, Ticket), SecureError> {
    respond_with(s, key, now_ms, PROTOCOL)
}

/// [`respond`] with another Noise suite (for benchmarks).
pub fn respond_with<S: Read + Write>(
    mut s: S,
    key: &ClusterKey,
    now_ms: u64,
    suite: &str,
) -> Result<(SecureStream<S>, Ticket), SecureError> {
    let mut raw = [0u8; TICKET_LEN];
    // The magic first: a peer that is not a secure MOS peer is told apart from a truncated one.
    read_exact_or_closed(&mut s, &mut raw[..4])?;
    if raw[..4] != MAGIC {
        return Err(SecureError::Magic([raw[0], raw[1], raw[2], raw[3]]));
    }
    read_exact_or_closed(&mut s, &mut raw[4..])?;
    let ticket = Ticket::decode(&raw)?;
    let skew = ticket.issued_ms.abs_diff(now_ms);
    if skew > MAX_TICKET_AGE_MS {
        return Err(SecureError::Stale(skew));
    }
    let psk = key.ticket_psk(&ticket);
    let params = suite.parse().map_err(noise_err)?;
    let mut hs =
        snow::Builder::new(params).prologue(&raw).and_then(|b| b.psk(0, &psk)).and_then(|b| b.build_responder()).map_err(noise_err)?;
    let first = read_handshake_msg(&mut s)?;
    let mut m = [0u8; MAX_HANDSHAKE];
    hs.read_message(&first, &mut m).map_err(noise_err)?;
    let n = hs.write_message(&[], &mut m).map_err(noise_err)?;
    write_msg(&mut s, &m[..n])?;
    s.flush()?;
    Ok((SecureStream::new(s, hs.into_stateless_transport_mode().map_err(noise_err)?), ticket))
}

/// A connected pair of streams over `a` (initiator) and `b` (responder), the handshake done in
/// memory with `key` and a fixed ticket: for tests, benchmarks and fuzzing.
pub fn pair_in_memory<A, B>(a: A, b: B, key: &ClusterKey, suite: &str) -> Result<(SecureStream<A>, SecureStream<B>), SecureError> {
    let cred = key.issue(0, 0, 0, 0, [0; 16]);
    let prologue = cred.ticket.encode();
    let build = |initiator: bool| {
        let params = suite.parse().map_err(noise_err)?;
        let b = snow::Builder::new(params).prologue(&prologue).and_then(|b| b.psk(0, &cred.psk)).map_err(noise_err)?;
        if initiator { b.build_initiator() } else { b.build_responder() }.map_err(noise_err)
    };
    let (mut i, mut r) = (build(true)?, build(false)?);
    let (mut m, mut p) = ([0u8; MAX_HANDSHAKE], [0u8; MAX_HANDSHAKE]);
    let n = i.write_message(&[], &mut m).map_err(noise_err)?;
    r.read_message(&m[..n], &mut p).map_err(noise_err)?;
    let n = r.write_message(&[], &mut m).map_err(noise_err)?;
    i.read_message(&m[..n], &mut p).map_err(noise_err)?;
    Ok((
        SecureStream::new(a, i.into_stateless_transport_mode().map_err(noise_err)?),
        SecureStream::new(b, r.into_stateless_transport_mode().map_err(noise_err)?),
    ))
}

/// The receiving direction: ciphertext as it arrived, the plaintext of one message, and the
/// nonce of the next message expected.
struct Rx {
    nonce: u64,
    /// Room for two whole messages: one being consumed and the next arriving.
    wire: Box<[u8]>,
    start: usize,
    end: usize,
    plain: Box<[u8]>,
    p_start: usize,
    p_end: usize,
    failed: bool,
}

impl Rx {
    /// Length of the whole message at the front, if it is all here (Err: invalid length).
    fn whole(&self) -> io::Result<Option<usize>> {
        let held = &self.wire[self.start..self.end];
        let Some(l) = held.first_chunk::<2>() else { return Ok(None) };
        let len = u16::from_be_bytes(*l) as usize;
        if len < TAG_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("secure stream: message of {len} bytes, shorter than its tag")));
        }
        Ok((held.len() >= 2 + len).then_some(len))
    }
}

/// A stream whose bytes travel as Noise transport messages over `S` (see the module doc).
pub struct SecureStream<S> {
    inner: S,
    st: State,
}

/// The sending direction: the messages of one `write`, and the nonce of the next one.
struct Tx {
    nonce: u64,
    buf: Vec<u8>,
    failed: bool,
}

/// Everything of a [`SecureStream`] but the wrapped stream. The keys are shared by the two halves
/// of a split stream ([`SecureStream::split_off`]); each direction, with its nonce, is held by
/// exactly one of them (`None` in the other).
struct State {
    noise: Arc<snow::StatelessTransportState>,
    rx: Option<Box<Rx>>,
    tx: Option<Tx>,
}

/// A direction of a [`SecureStream`], to lend to another thread ([`SecureStream::split_off`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Receiver,
    Sender,
}

impl<S> std::fmt::Debug for SecureStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let buffered = self.st.rx.as_ref().map(|rx| rx.p_end - rx.p_start);
        f.debug_struct("SecureStream").field("buffered", &buffered).field("sends", &self.st.tx.is_some()).finish_non_exhaustive()
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("secure stream broken: {what}"))
}

impl<S> SecureStream<S> {
    fn new(inner: S, noise: snow::StatelessTransportState) -> SecureStream<S> {
        let rx = Rx {
            nonce: 0,
            wire: vec![0u8; 2 * WIRE_MAX].into_boxed_slice(),
            start: 0,
            end: 0,
            plain: vec![0u8; MAX_MSG].into_boxed_slice(),
            p_start: 0,
            p_end: 0,
            failed: false,
        };
        let tx = Tx { nonce: 0, buf: Vec::with_capacity(TX_BATCH * WIRE_MAX), failed: false };
        SecureStream { inner, st: State { noise: Arc::new(noise), rx: Some(Box::new(rx)), tx: Some(tx) } }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The same session over `f(inner)` (e.g. the bare socket once a handshake wrapper is done).
    pub fn map_inner<T>(self, f: impl FnOnce(S) -> T) -> SecureStream<T> {
        SecureStream { inner: f(self.inner), st: self.st }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Nonce of the next message sent (0 in a receiving half).
    pub fn sending_nonce(&self) -> u64 {
        self.st.tx.as_ref().map_or(0, |tx| tx.nonce)
    }

    /// The same keys over another stream, with empty buffers, a cleared failure and the next
    /// message expected with nonce `recv_nonce` (fuzzing: one handshake, many inputs).
    pub fn rewire<T>(self, inner: T, recv_nonce: u64) -> SecureStream<T> {
        let mut st = self.st;
        if let Some(rx) = st.rx.as_deref_mut() {
            (rx.nonce, rx.start, rx.end, rx.p_start, rx.p_end, rx.failed) = (recv_nonce, 0, 0, 0, 0, false);
        }
        if let Some(tx) = st.tx.as_mut() {
            tx.failed = false;
        }
        SecureStream { inner, st }
    }

    /// Whether stream data has already been received that a `read` returns without reading `S`
    /// (decrypted bytes, or a whole message): a poll on the underlying socket does not show it.
    pub fn buffered(&self) -> bool {
        self.st.rx.as_ref().is_some_and(|rx| rx.p_start < rx.p_end || !matches!(rx.whole(), Ok(None)))
    }

    /// Lends one direction of the session, with what it holds (received data not yet read, the
    /// nonces), to a stream over `inner`: another handle of the same connection (e.g. a
    /// `TcpStream::try_clone`) for another thread. The two then receive and send at the same time;
    /// each fails the direction it does not hold ("lent out"). [`SecureStream::rejoin`] takes it back.
    pub fn split_off<T>(&mut self, inner: T, half: Half) -> io::Result<SecureStream<T>> {
        let lent = |what: &str| io::Error::other(format!("secure stream: the {what} direction is lent out already"));
        let st = match half {
            Half::Receiver => {
                State { noise: Arc::clone(&self.st.noise), rx: Some(self.st.rx.take().ok_or_else(|| lent("receiving"))?), tx: None }
            }
            Half::Sender => {
                State { noise: Arc::clone(&self.st.noise), rx: None, tx: Some(self.st.tx.take().ok_or_else(|| lent("sending"))?) }
            }
        };
        Ok(SecureStream { inner, st })
    }

    /// Takes back what [`SecureStream::split_off`] lent (the other stream is dropped). Refused,
    /// changing nothing, for a stream of another session or a direction this one still holds.
    pub fn rejoin<T>(&mut self, half: SecureStream<T>) -> io::Result<()> {
        let st = half.st;
        if !Arc::ptr_eq(&st.noise, &self.st.noise) {
            return Err(io::Error::other("secure stream: rejoin with a stream of another session"));
        }
        if (st.rx.is_some() && self.st.rx.is_some()) || (st.tx.is_some() && self.st.tx.is_some()) {
            return Err(io::Error::other("secure stream: rejoin of a direction that was not lent out"));
        }
        self.st.rx = self.st.rx.take().or(st.rx);
        self.st.tx = self.st.tx.take().or(st.tx);
        Ok(())
    }

    /// Reads stream data like `read`, taking ciphertext from `src` instead of the wrapped stream
    /// (e.g. a non-blocking receive on the same socket). An error of `src` (`WouldBlock`, a
    /// timeout) leaves the stream intact: what was received so far is kept.
    pub fn read_from<R: Read + ?Sized>(&mut self, src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        self.st.read_from(src, buf)
    }
}

impl State {
    fn read_from<R: Read + ?Sized>(&mut self, src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(rx) = self.rx.as_deref_mut() else {
            return Err(io::Error::other("secure stream: the receiving direction is lent out"));
        };
        loop {
            if rx.failed {
                return Err(broken("a message failed to decrypt or had a bad length"));
            }
            if rx.p_start < rx.p_end {
                let n = buf.len().min(rx.p_end - rx.p_start);
                buf[..n].copy_from_slice(&rx.plain[rx.p_start..rx.p_start + n]);
                rx.p_start += n;
                return Ok(n);
            }
            match rx.whole() {
                Ok(Some(len)) => {
                    let msg = &rx.wire[rx.start + 2..rx.start + 2 + len];
                    match self.noise.read_message(rx.nonce, msg, &mut rx.plain) {
                        Ok(n) => {
                            rx.nonce += 1;
                            rx.start += 2 + len;
                            rx.p_start = 0;
                            rx.p_end = n;
                        }
                        Err(_) => rx.failed = true,
                    }
                    // (An empty message carries nothing: the loop goes on to the next one.)
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    rx.failed = true;
                    return Err(e);
                }
            }
            // Need more ciphertext: make room for a whole message after what is held.
            if rx.wire.len() - rx.start < WIRE_MAX {
                rx.wire.copy_within(rx.start..rx.end, 0);
                rx.end -= rx.start;
                rx.start = 0;
            }
            let n = src.read(&mut rx.wire[rx.end..])?;
            if n == 0 {
                if rx.start == rx.end {
                    return Ok(0);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "secure stream: connection closed inside a message"));
            }
            rx.end += n;
        }
    }

    /// Encrypts up to [`TX_BATCH`] messages of `buf` into `tx`; returns the stream bytes taken.
    fn seal(noise: &snow::StatelessTransportState, tx: &mut Tx, buf: &[u8]) -> io::Result<usize> {
        tx.buf.clear();
        let mut taken = 0;
        for chunk in buf.chunks(MAX_PLAIN).take(TX_BATCH) {
            let at = tx.buf.len();
            tx.buf.resize(at + 2 + chunk.len() + TAG_LEN, 0);
            let n = noise.write_message(tx.nonce, chunk, &mut tx.buf[at + 2..]).map_err(|e| broken(&e.to_string()))?;
            tx.nonce += 1;
            debug_assert_eq!(n, chunk.len() + TAG_LEN);
            tx.buf[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            taken += chunk.len();
        }
        Ok(taken)
    }
}

impl<S: Read> Read for SecureStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.st.read_from(&mut self.inner, buf)
    }
}

impl<S: Write> Write for SecureStream<S> {
    /// Encrypts and sends up to [`TX_BATCH`] × [`MAX_PLAIN`] bytes of `buf` with one `write_all`
    /// of the wrapped stream. A failed or timed-out send breaks the stream (a message may have
    /// been cut): later writes fail.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tx) = self.st.tx.as_mut() else {
            return Err(io::Error::other("secure stream: the sending direction is lent out"));
        };
        if tx.failed {
            return Err(broken("an earlier send failed"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let taken = State::seal(&self.st.noise, tx, buf)?;
        if let Err(e) = self.inner.write_all(&tx.buf) {
            tx.failed = true;
            return Err(e);
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::from_file_bytes(s.as_bytes()).unwrap()
    }

    const NOW: u64 = 1_800_000_000_000;

    /// A socket that records the size of every write and can flip one byte of what it sends.
    struct Tap {
        s: UnixStream,
        flip_at: Option<usize>,
        sent: usize,
        writes: Vec<usize>,
    }

    impl Read for Tap {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.s.read(b)
        }
    }

    impl Write for Tap {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut v = b.to_vec();
            if let Some(at) = self.flip_at.filter(|a| (self.sent..self.sent + b.len()).contains(a)) {
                v[at - self.sent] ^= 0x40;
            }
            self.s.write_all(&v)?;
            self.sent += b.len();
            self.writes.push(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn tap(s: UnixStream) -> Tap {
        Tap { s, flip_at: None, sent: 0, writes: Vec::new() }
    }

    type Pair = (Result<SecureStream<Tap>, SecureError>, Result<(SecureStream<Tap>, Ticket), SecureError>);

    /// A connected pair: (initiator's stream, responder's stream and the ticket it saw).
    fn pair(ki: &ClusterKey, kr: &ClusterKey) -> Pair {
        let (a, b) = UnixStream::pair().unwrap();
        let cred = ki.issue(1000, 100, 3, NOW, [7; 16]);
        let kr = kr.clone();
        // A refused initiator sees the connection end: the responder drops it.
        let r = std::thread::spawn(move || respond(tap(b), &kr, NOW + 1000));
        let i = initiate(tap(a), &cred);
        (i, r.join().unwrap())
    }

    #[test]
    fn same_key_connects_and_carries_data_both_ways() {
        let k = key("a cluster key of some length");
        let (i, r) = pair(&k, &k);
        let (mut i, (mut r, ticket)) = (i.unwrap(), r.unwrap());
        assert_eq!((ticket.uid, ticket.gid, ticket.node, ticket.issued_ms), (1000, 100, 3, NOW));
        i.write_all(b"hello over noise").unwrap();
        let mut b = [0u8; 16];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello over noise");
        r.write_all(b"and back").unwrap();
        let mut b = [0u8; 8];
        i.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"and back");
        // A clean close reads as end of stream.
        drop(i);
        assert_eq!(r.read(&mut b).unwrap(), 0);
    }

    /// Both directions used at once from two threads, as a post-copy's lazy phase does, then the
    /// stream whole again; a half refuses the direction it does not hold, and a stream of another
    /// session cannot be rejoined.
    #[test]
    fn a_split_stream_sends_and_receives_from_two_threads_and_rejoins() {
        let k = key("a cluster key of some length");
        let (i, r) = pair(&k, &k);
        let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
        i.write_all(b"before").unwrap();
        let mut b = [0u8; 6];
        r.read_exact(&mut b).unwrap();
        // Data already received but not read travels with the receiving half.
        r.write_all(b"early!").unwrap();
        let mut one = [0u8; 1];
        i.read_exact(&mut one).unwrap();
        let clone = tap(i.get_ref().s.try_clone().unwrap());
        let mut rx = i.split_off(clone, Half::Receiver).unwrap();
        assert!(i.split_off(tap(i.get_ref().s.try_clone().unwrap()), Half::Receiver).is_err(), "lent twice");
        assert!(i.read(&mut one).is_err(), "the sender read");
        assert!(rx.write(b"x").is_err(), "the receiver wrote");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 5];
            rx.read_exact(&mut got).unwrap();
            let mut all = Vec::new();
            for _ in 0..200 {
                let mut m = [0u8; 1000];
                rx.read_exact(&mut m).unwrap();
                all.extend_from_slice(&m);
            }
            (rx, got, all)
        });
        let peer = std::thread::spawn(move || {
            for n in 0..200u32 {
                r.write_all(&[n as u8; 1000]).unwrap();
                let mut m = [0u8; 4];
                r.read_exact(&mut m).unwrap();
                assert_eq!(u32::from_le_bytes(m), n);
            }
            r
        });
        for n in 0..200u32 {
            i.write_all(&n.to_le_bytes()).unwrap();
        }
        let (rx, got, all) = reader.join().unwrap();
        let mut r = peer.join().unwrap();
        assert_eq!(&got, b"arly!");
        assert!(all.chunks(1000).enumerate().all(|(n, c)| c.iter().all(|b| *b == n as u8)));
        // Another session's half is refused, and nothing changes.
        let (i2, _) = pair(&k, &k);
        let mut i2 = i2.unwrap();
        let foreign = i2.split_off(tap(i2.get_ref().s.try_clone().unwrap()), Half::Receiver).unwrap();
        assert!(i.rejoin(foreign).is_err());
        i.rejoin(rx).unwrap();
        i.write_all(b"after").unwrap();
        r.write_all(b"reply").unwrap();
        let mut b = [0u8; 5];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"after");
        i.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"reply");
        // The sending direction can be lent the same way.
        let mut tx = i.split_off(tap(i.get_ref().s.try_clone().unwrap()), Half::Sender).unwrap();
        assert!(i.write(b"x").is_err(), "the receiver wrote");
        tx.write_all(b"lent!").unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"lent!");
        i.rejoin(tx).unwrap();
        i.write_all(b"again").unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"again");
    }

    #[test]
    fn a_16_mib_frame_is_chunked_into_bounded_messages() {
        let k = key("a cluster key of some length");
        let (i, r) = pair(&k, &k);
        let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
        let big: Vec<u8> = (0..16 * 1024 * 1024 + 12345).map(|x: usize| (x * 31 % 251) as u8).collect();
        let sent = big.clone();
        let (hs_bytes, hs_writes) = (i.get_ref().sent, i.get_ref().writes.len());
        let w = std::thread::spawn(move || {
            i.write_all(&sent).unwrap();
            i
        });
        // Read in odd-sized pieces.
        let mut got = Vec::with_capacity(big.len());
        let mut b = vec![0u8; 100_003];
        while got.len() < big.len() {
            let n = r.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        assert!(got == big, "16 MiB came out changed");
        let i = w.join().unwrap();
        // Every write of the socket holds at most TX_BATCH whole messages, each at most 64 KiB.
        let msgs = big.len().div_ceil(MAX_PLAIN);
        assert!(i.get_ref().writes.iter().all(|w| *w <= TX_BATCH * WIRE_MAX), "a write over the batch bound");
        assert_eq!(i.get_ref().sent - hs_bytes, big.len() + msgs * (2 + TAG_LEN), "wire bytes = data + 18 per message");
        assert_eq!(i.get_ref().writes.len() - hs_writes, msgs.div_ceil(TX_BATCH), "one write per batch");
    }

    #[test]
    fn a_changed_byte_breaks_the_stream_for_good() {
        let k = key("a cluster key of some length");
        for at_msg in [0usize, 2, 17] {
            let (i, r) = pair(&k, &k);
            let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
            // Flip a byte of the first transport message: in its length, its ciphertext or its tag.
            let start = i.get_ref().sent;
            i.get_mut().flip_at = Some(start + at_msg);
            i.write_all(b"0123456789").unwrap();
            i.write_all(b"second message").unwrap();
            // (A changed length makes the reader wait for more: the sender's close ends that.)
            drop(i);
            let mut b = [0u8; 10];
            assert!(r.read_exact(&mut b).is_err(), "tampered byte {at_msg} was accepted");
            assert!(r.read(&mut b).is_err(), "the stream went on after a bad message");
        }
    }

    #[test]
    fn the_wrong_key_fails_the_handshake() {
        let (i, r) = pair(&key("the key of nodes one and two"), &key("another cluster's key here"));
        assert!(matches!(r, Err(SecureError::Handshake(_))), "responder: {r:?}");
        assert!(i.is_err(), "the initiator went on");
    }

    #[test]
    fn random_bytes_truncation_and_stale_tickets_are_refused() {
        let k = key("a cluster key of some length");
        let run = |bytes: Vec<u8>, now: u64| {
            let mut s = io::Cursor::new(bytes);
            let mut rw = ReadOnly(&mut s);
            respond(&mut rw, &k, now).map(|_| ())
        };
        assert!(matches!(run(b"MOS\0\x00\x01\x00\x09rest".to_vec(), NOW), Err(SecureError::Magic(_))));
        assert!(matches!(run(vec![0xab; 1000], NOW), Err(SecureError::Magic(_))));
        assert!(matches!(run(b"MOSN\x00".to_vec(), NOW), Err(SecureError::Closed)));
        let cred = k.issue(1, 1, 1, NOW, [0; 16]);
        let mut t = cred.ticket.encode().to_vec();
        assert!(matches!(run(t.clone(), NOW + MAX_TICKET_AGE_MS + 1), Err(SecureError::Stale(_))));
        assert!(matches!(run(t.clone(), NOW), Err(SecureError::Closed)), "no handshake message after the ticket");
        // A handshake message over the bound is refused before anything is allocated for it.
        t.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(run(t.clone(), NOW), Err(SecureError::HandshakeSize(65535))));
        let mut v = cred.ticket.encode();
        v[5] = 9;
        assert!(matches!(run(v.to_vec(), NOW), Err(SecureError::Version(9))));
        let mut v = cred.ticket.encode();
        v[7] = 1;
        assert!(matches!(run(v.to_vec(), NOW), Err(SecureError::Reserved(1))));
    }

    /// A `Read` that drops what is written (a responder facing a peer that only sends).
    struct ReadOnly<'a>(&'a mut io::Cursor<Vec<u8>>);
    impl Read for &mut ReadOnly<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for &mut ReadOnly<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_lengths_and_partial_input_are_handled() {
        let k = key("a cluster key of some length");
        let (i, r) = pair(&k, &k);
        let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
        i.write_all(&[7u8; 1000]).unwrap();
        // The message arrives in two parts; the first read of the source says WouldBlock after it.
        let mut wire = vec![0u8; 1000 + 2 + TAG_LEN];
        r.get_mut().s.read_exact(&mut wire).unwrap();
        let mut b = [0u8; 2000];
        let mut first = Parts(vec![wire[..500].to_vec()]);
        let e = r.read_from(&mut first, &mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!r.buffered());
        let mut second = Parts(vec![wire[500..].to_vec()]);
        assert_eq!(r.read_from(&mut second, &mut b[..10]).unwrap(), 10);
        assert!(r.buffered(), "990 decrypted bytes are held");
        assert_eq!(r.read_from(&mut Parts(vec![]), &mut b).unwrap(), 990);
        // A length shorter than a tag is refused, and the stream stays broken.
        let e = r.read_from(&mut Parts(vec![vec![0, 5, 1, 2, 3, 4, 5]]), &mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(r.read_from(&mut Parts(vec![]), &mut b).is_err());
    }

    /// A source that yields its parts, then WouldBlock.
    struct Parts(Vec<Vec<u8>>);
    impl Read for Parts {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let p = self.0.remove(0);
            b[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
    }

    #[test]
    fn golden_ticket() {
        let t = Ticket { uid: 1, gid: 2, node: 3, issued_ms: 4, nonce: [5; 16] };
        let hex: String = t.encode()[..28].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "4d4f534e00010000000000010000000200000003 0000000000000004".replace(' ', ""));
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
    }
}
