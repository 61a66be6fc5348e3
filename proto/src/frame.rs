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
