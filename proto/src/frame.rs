//! Framing: a fixed little-endian header on every frame.
//!
//! ```text
//! offset size field
//!   0     4   magic    b"MOS\0"
//!   4     2   version  protocol version of this frame's body
//!   6     2   kind     [`Kind`]; 0 is Invalid and always rejected
//!   8     4   length   body length in bytes, <= the reader's limit (checked before allocating)
//!  12     4   reserved must be 0
//! ```
use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read, Write};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"MOS\0";
/// Header size in bytes.
pub const HEADER_LEN: usize = 16;
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// The oldest version this build still accepts (current or previous).
pub const MIN_VERSION: u16 = if VERSION > 1 { VERSION - 1 } else { 1 };
/// Largest body any MOS frame may have (a `Pages` frame carries at most [`crate::pages::MAX_PAGES_PER_FRAME`] pages).
pub const MAX_FRAME: u32 = 17 * 1024 * 1024;
/// Largest body of a non-page frame (control, deputy, offer, context).
pub const MAX_SMALL_FRAME: u32 = 2 * 1024 * 1024;

/// Frame kinds. Numbers are part of the wire format: never renumber, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    Invalid = 0,
    Offer = 1,
    Accept = 2,
    Refuse = 3,
    Vmas = 4,
    Pages = 5,
    Context = 6,
    Resumed = 7,
    Failed = 8,
    Deputy = 9,
    Control = 10,
    /// Pre-copy: the memory map changed while the process ran ([`crate::migration::MapUpdate`]).
    MapUpdate = 11,
    /// Post-copy: the areas whose pages come after `Resumed` ([`crate::migration::LazyAreas`]).
    LazyAreas = 12,
    /// Post-copy, receiver to sender: the process faulted on these pages ([`crate::migration::PageRequest`]).
    PageRequest = 13,
    /// Post-copy, sender to receiver: every page has been sent ([`crate::migration::LazyEnd`]).
    LazyEnd = 14,
    /// Post-copy, receiver to sender: every page is in place; the sender may free its copy
    /// ([`crate::migration::LazyDone`]).
    LazyDone = 15,
    /// Checkpoint file: the first frame ([`crate::checkpoint::Header`]).
    CheckpointHeader = 20,
    /// Checkpoint file: the open descriptors ([`crate::checkpoint::FileTable`]).
    FileTable = 21,
    /// Checkpoint file: the last frame, length and SHA-256 of everything before it (raw, 40 bytes).
    CheckpointEnd = 22,
    /// Home -> remote mosd, first frame of a new connection: the deputy channel of a child forked
    /// by a guest there ([`crate::deputy::ForkJoin`]).
    ForkJoin = 40,
    /// Home -> remote mosd, first frame of a new connection: the kernel lane of a guest there
    /// ([`crate::deputy::LaneJoin`]); after it the connection carries [`crate::lane`] records.
    LaneJoin = 41,
}

impl Kind {
    /// Decodes a kind number; unknown numbers are an error, never a guess.
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Offer,
            2 => Kind::Accept,
            3 => Kind::Refuse,
            4 => Kind::Vmas,
            5 => Kind::Pages,
            6 => Kind::Context,
            7 => Kind::Resumed,
            8 => Kind::Failed,
            9 => Kind::Deputy,
            10 => Kind::Control,
            11 => Kind::MapUpdate,
            12 => Kind::LazyAreas,
            13 => Kind::PageRequest,
            14 => Kind::LazyEnd,
            15 => Kind::LazyDone,
            20 => Kind::CheckpointHeader,
            21 => Kind::FileTable,
            22 => Kind::CheckpointEnd,
            40 => Kind::ForkJoin,
            41 => Kind::LaneJoin,
            _ => return None,
        })
    }

    /// Largest body this kind may carry.
    pub fn max_body(self) -> u32 {
        match self {
            Kind::Pages => MAX_FRAME,
            _ => MAX_SMALL_FRAME,
        }
    }
}

/// Errors of framing and body decoding.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:02x?}: not a MOS peer")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {got} (this build speaks {MIN_VERSION}..={VERSION})")]
    Version { got: u16 },
    #[error("invalid frame kind {0}")]
    BadKind(u16),
    #[error("frame of kind {kind:?} too large: {len} bytes > limit {limit}")]
    TooLarge { kind: Kind, len: u32, limit: u32 },
    #[error("reserved header field is {0:#x}, must be 0")]
    Reserved(u32),
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: Kind, got: Kind },
    #[error("malformed {kind:?} body: {detail}")]
    Body { kind: Kind, detail: String },
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error on the MOS stream")]
    Io(#[from] std::io::Error),
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub kind: Kind,
    pub len: u32,
}

impl Header {
    /// Encodes the header for a body of `len` bytes at the current version.
    pub fn encode(kind: Kind, len: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&VERSION.to_le_bytes());
        h[6..8].copy_from_slice(&(kind as u16).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h
    }

    /// Decodes and validates a header: magic, version window, kind, reserved, and the size bound
    /// for the kind (so a caller never allocates for an oversized frame).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let magic: [u8; 4] = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(FrameError::Version { got: version });
        }
        let kind_n = u16::from_le_bytes([b[6], b[7]]);
        let kind = Kind::from_u16(kind_n).ok_or(FrameError::BadKind(kind_n))?;
        let len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let reserved = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        if len > kind.max_body() {
            return Err(FrameError::TooLarge { kind, len, limit: kind.max_body() });
        }
        Ok(Header { version, kind, len })
    }
}

/// A whole frame: header fields and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub version: u16,
    pub body: Vec<u8>,
}

impl Frame {
    /// Decodes the body as a postcard message of type `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        decode_body(self.kind, &self.body)
    }

    /// Decodes the body, requiring the frame to be of kind `want`.
    pub fn expect<T: DeserializeOwned>(&self, want: Kind) -> Result<T, FrameError> {
        if self.kind != want {
            return Err(FrameError::Unexpected { expected: want, got: self.kind });
        }
        self.decode()
    }
}

/// Decodes a postcard body; trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, FrameError> {
    let (v, rest) = postcard::take_from_bytes(body).map_err(|e| FrameError::Body { kind, detail: e.to_string() })?;
    if !rest.is_empty() {
        return Err(FrameError::Body { kind, detail: format!("{} trailing bytes", rest.len()) });
    }
    Ok(v)
}

/// Encodes header + postcard body into one buffer.
pub fn encode<T: Serialize>(kind: Kind, msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(msg).map_err(|e| FrameError::Body { kind, detail: e.to_string() })?;
    let len = u32::try_from(body.len()).ok().filter(|l| *l <= kind.max_body()).ok_or(FrameError::TooLarge {
        kind,
        len: u32::try_from(body.len()).unwrap_or(u32::MAX),
        limit: kind.max_body(),
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&Header::encode(kind, len));
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one postcard frame.
pub fn write_msg<W: Write, T: Serialize>(w: &mut W, kind: Kind, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(kind, msg)?)?;
    Ok(())
}

/// Writes a frame whose body is already encoded (used for raw page frames).
pub fn write_raw<W: Write>(w: &mut W, kind: Kind, body: &[&[u8]]) -> Result<(), FrameError> {
    let total: usize = body.iter().map(|b| b.len()).sum();
    let len = u32::try_from(total).ok().filter(|l| *l <= kind.max_body()).ok_or(FrameError::TooLarge {
        kind,
        len: u32::MAX,
        limit: kind.max_body(),
    })?;
    w.write_all(&Header::encode(kind, len))?;
    for b in body {
        w.write_all(b)?;
    }
    Ok(())
}

/// Reads one frame. The body is allocated only after the header passed its bounds check.
/// A clean end of stream before the first header byte is [`FrameError::Closed`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Frame, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let hdr = Header::decode(&h)?;
    let mut body = vec![0u8; hdr.len as usize];
    r.read_exact(&mut body)?;
    Ok(Frame { kind: hdr.kind, version: hdr.version, body })
}

/// Bytes a [`FrameReader`] asks for in one `read`: room for every small frame and the start of a
/// large one.
const READ_AHEAD: usize = 64 * 1024;

/// Reads frames through a buffer, so that a small frame (a deputy request or reply) costs one
/// `read` system call for header and body instead of two. Bytes read past the end of a frame stay
/// here for the next one: they belong to the stream. Whoever goes on reading the stream without
/// this reader (a migration stream after an `Offer`) must read through [`chain`](Self::chain), or
/// find the reader [empty](Self::is_empty).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader { buf: vec![0; READ_AHEAD], start: 0, end: 0 }
    }

    /// No byte of the stream is held here.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn held(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Would [`read_frame`](Self::read_frame) return without reading the stream (a whole frame, or
    /// a header it rejects, is held)? A poll loop must not wait for readiness while this is true.
    pub fn has_frame(&self) -> bool {
        let held = self.held();
        let Some(h) = held.first_chunk::<HEADER_LEN>() else { return false };
        match Header::decode(h) {
            Ok(hdr) => held.len() - HEADER_LEN >= hdr.len as usize,
            Err(_) => true,
        }
    }

    /// Makes room at the end of the buffer for at least one header.
    fn room(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < HEADER_LEN {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Adds what one call of `read` returns (given the free part of the buffer); `Ok(0)` means end
    /// of stream (or, for a non-blocking `read`, nothing there: it returns `WouldBlock` instead).
    pub fn fill_with(&mut self, read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>) -> std::io::Result<usize> {
        let n = read(self.room())?;
        self.end += n;
        Ok(n)
    }

    /// Reads one frame, with a single `read` when the stream has it whole. The body is allocated
    /// only after the header passed its bounds check; a body larger than the buffer is read
    /// straight into its allocation. A clean end of stream before the first header byte is
    /// [`FrameError::Closed`].
    pub fn read_frame<R: Read>(&mut self, r: &mut R) -> Result<Frame, FrameError> {
        while self.end - self.start < HEADER_LEN {
            match self.fill_with(|b| r.read(b)) {
                Ok(0) if self.is_empty() => return Err(FrameError::Closed),
                Ok(0) => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let h = self.held().first_chunk::<HEADER_LEN>().copied().expect("a whole header is held");
        let hdr = Header::decode(&h)?;
        self.start += HEADER_LEN;
        let len = hdr.len as usize;
        let have = (self.end - self.start).min(len);
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        if have < len {
            body.resize(len, 0);
            r.read_exact(&mut body[have..])?;
        }
        Ok(Frame { kind: hdr.kind, version: hdr.version, body })
    }

    /// The stream as `Read + Write` that first yields the bytes held here: for code that goes on
    /// with the stream in another form (the migration stream).
    pub fn chain<'a, S>(&'a mut self, stream: &'a mut S) -> Chained<'a, S> {
        Chained { rx: self, stream }
    }
}

/// A stream read through a [`FrameReader`]'s held bytes first; writes go straight to the stream.
#[derive(Debug)]
pub struct Chained<'a, S> {
    rx: &'a mut FrameReader,
    stream: &'a mut S,
}

impl<S: Read> Read for Chained<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rx.is_empty() {
            return self.stream.read(buf);
        }
        let held = self.rx.held();
        let n = held.len().min(buf.len());
        buf[..n].copy_from_slice(&held[..n]);
        self.rx.start += n;
        Ok(n)
    }
}

impl<S: Write> Write for Chained<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Splits a byte slice holding one whole frame (used by fuzzing and datagram transports).
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let hdr = Header::decode(&h)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() != hdr.len as usize {
        return Err(FrameError::Body { kind: hdr.kind, detail: format!("length {} != header {}", body.len(), hdr.len) });
    }
    Ok(Frame { kind: hdr.kind, version: hdr.version, body: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that returns at most `step` bytes per read and counts the reads.
    struct Chunky {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        reads: usize,
    }

    impl Read for Chunky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn frames(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            write_raw(&mut out, Kind::Deputy, &[b]).unwrap();
        }
        out
    }

    #[test]
    fn small_frames_take_one_read_and_surplus_is_kept() {
        let bodies = vec![vec![1u8; 40], vec![2u8; 3], vec![]];
        let mut s = Chunky { data: frames(&bodies), pos: 0, step: usize::MAX, reads: 0 };
        let mut rx = FrameReader::new();
        assert!(!rx.has_frame());
        for b in &bodies {
            let f = rx.read_frame(&mut s).unwrap();
            assert_eq!((f.kind, &f.body), (Kind::Deputy, b));
        }
        assert_eq!(s.reads, 1, "three small frames sent together are read at once");
        assert!(rx.is_empty() && !rx.has_frame());
        assert!(matches!(rx.read_frame(&mut s), Err(FrameError::Closed)));
    }

    #[test]
    fn trickled_and_large_frames_come_out_whole() {
        let bodies = vec![vec![7u8; 3 * READ_AHEAD + 5], vec![9u8; 100], (0..=255u8).cycle().take(READ_AHEAD).collect()];
        for step in [1, 7, HEADER_LEN, 4096, usize::MAX] {
            let mut s = Chunky { data: frames(&bodies), pos: 0, step, reads: 0 };
            let mut rx = FrameReader::new();
            for b in &bodies {
                assert_eq!(&rx.read_frame(&mut s).unwrap().body, b, "step {step}");
            }
            assert!(matches!(rx.read_frame(&mut s), Err(FrameError::Closed)), "step {step}");
        }
    }

    #[test]
    fn has_frame_says_when_no_read_is_needed() {
        let all = frames(&[vec![5u8; 10], vec![6u8; 10]]);
        let mut rx = FrameReader::new();
        // The first frame and part of the second arrive together.
        rx.fill_with(|b| {
            b[..HEADER_LEN + 10 + 3].copy_from_slice(&all[..HEADER_LEN + 13]);
            Ok(HEADER_LEN + 13)
        })
        .unwrap();
        assert!(rx.has_frame());
        let mut rest = Cursor::new(all[HEADER_LEN + 13..].to_vec());
        assert_eq!(rx.read_frame(&mut rest).unwrap().body, vec![5u8; 10]);
        assert!(!rx.has_frame() && !rx.is_empty());
        assert_eq!(rx.read_frame(&mut rest).unwrap().body, vec![6u8; 10]);
        // A bad header is reported without reading further.
        rx.fill_with(|b| {
            b[..HEADER_LEN].copy_from_slice(&[0xff; HEADER_LEN]);
            Ok(HEADER_LEN)
        })
        .unwrap();
        assert!(rx.has_frame());
        assert!(matches!(rx.read_frame(&mut Cursor::new(Vec::new())), Err(FrameError::BadMagic(_))));
    }

    #[test]
    fn chain_yields_held_bytes_before_the_stream() {
        let mut data = frames(&[vec![1u8; 4]]);
        data.extend_from_slice(b"migration stream");
        let mut s = Chunky { data, pos: 0, step: usize::MAX, reads: 0 };
        let mut rx = FrameReader::new();
        rx.read_frame(&mut s).unwrap();
        assert!(!rx.is_empty());
        let mut rest = Vec::new();
        rx.chain(&mut s).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"migration stream");
        assert!(rx.is_empty());
    }
}
