//! Shared checks of the mos-proto fuzz targets.
use mos_proto::frame::{self, Header, Kind, HEADER_LEN, VERSION};
use mos_proto::pages;
use serde::{de::DeserializeOwned, Serialize};

/// Decodes `data` as a postcard body of kind `kind`; whatever decodes must re-encode to a body
/// that decodes again to the same encoding (encode ∘ decode is stable).
pub fn postcard_body<T: Serialize + DeserializeOwned>(kind: Kind, data: &[u8]) {
    let Ok(v) = frame::decode_body::<T>(kind, data) else {
        return;
    };
    // A decoded body was at most the input, so re-encoding stays within the frame limit unless the
    // input was already over it.
    let Ok(once) = frame::encode(kind, &v) else {
        assert!(data.len() > kind.max_body() as usize, "a decodable body failed to re-encode");
        return;
    };
    let again: T = frame::decode_body(kind, &once[HEADER_LEN..]).expect("re-encoded body decodes");
    let twice = frame::encode(kind, &again).expect("re-encodes");
    assert_eq!(once, twice, "encoding is not stable");
}

/// Decodes `data` as a `Pages` body; a valid body re-encodes to exactly the same bytes.
pub fn pages_body(data: &[u8]) {
    let Ok((runs, bytes)) = pages::decode(data) else {
        return;
    };
    let mut out = pages::encode_runs(&runs);
    out.extend_from_slice(bytes);
    assert_eq!(out, data, "pages body does not re-encode to itself");
}

/// Parses a whole frame, checks the header re-encodes, and decodes the body as its kind says.
pub fn whole_frame(data: &[u8]) {
    let Ok(f) = frame::parse_frame(data) else {
        return;
    };
    assert_eq!(f.body.len() + HEADER_LEN, data.len());
    if f.version == VERSION {
        assert_eq!(Header::encode(f.kind, f.body.len() as u32), data[..HEADER_LEN]);
    }
    // The stream reader agrees with the slice parser.
    let g = frame::read_frame(&mut std::io::Cursor::new(data)).expect("read_frame agrees with parse_frame");
    assert_eq!(f, g);
    use mos_proto::control::{Command, Reply, Request};
    use mos_proto::deputy::DeputyMsg;
    use mos_proto::migration::{Accept, Context, Failed, MapUpdate, Offer, Refuse, Resumed, Vmas};
    match f.kind {
        Kind::Invalid => unreachable!("parse_frame returned an Invalid frame"),
        Kind::Offer => postcard_body::<Offer>(f.kind, &f.body),
        Kind::Accept => postcard_body::<Accept>(f.kind, &f.body),
        Kind::Refuse => postcard_body::<Refuse>(f.kind, &f.body),
        Kind::Vmas => postcard_body::<Vmas>(f.kind, &f.body),
        Kind::Pages => pages_body(&f.body),
        Kind::Context => postcard_body::<Context>(f.kind, &f.body),
        Kind::Resumed => postcard_body::<Resumed>(f.kind, &f.body),
        Kind::Failed => postcard_body::<Failed>(f.kind, &f.body),
        Kind::Deputy => postcard_body::<DeputyMsg>(f.kind, &f.body),
        Kind::Control => {
            postcard_body::<Request>(f.kind, &f.body);
            postcard_body::<Reply>(f.kind, &f.body);
            postcard_body::<Command>(f.kind, &f.body);
        }
        Kind::MapUpdate => postcard_body::<MapUpdate>(f.kind, &f.body),
        Kind::ForkJoin => postcard_body::<mos_proto::deputy::ForkJoin>(f.kind, &f.body),
        Kind::LaneJoin => postcard_body::<mos_proto::deputy::LaneJoin>(f.kind, &f.body),
        Kind::LazyAreas => postcard_body::<mos_proto::migration::LazyAreas>(f.kind, &f.body),
        Kind::PageRequest => postcard_body::<mos_proto::migration::PageRequest>(f.kind, &f.body),
        Kind::LazyEnd => postcard_body::<mos_proto::migration::LazyEnd>(f.kind, &f.body),
        Kind::LazyDone => postcard_body::<mos_proto::migration::LazyDone>(f.kind, &f.body),
        Kind::CheckpointHeader => postcard_body::<mos_proto::checkpoint::Header>(f.kind, &f.body),
        Kind::FileTable => postcard_body::<mos_proto::checkpoint::FileTable>(f.kind, &f.body),
        Kind::CheckpointEnd => {
            let _ = mos_proto::checkpoint::decode_end(&f.body);
        }
    }
}

/// Checks `data` as a whole checkpoint file (must never panic), and decodes it as the bodies of
/// the checkpoint-only frames.
pub fn checkpoint_file(data: &[u8]) {
    let _ = mos_proto::checkpoint::verify(&mut &data[..], data.len() as u64);
    postcard_body::<mos_proto::checkpoint::Header>(Kind::CheckpointHeader, data);
    postcard_body::<mos_proto::checkpoint::FileTable>(Kind::FileTable, data);
    if let Ok((n, digest)) = mos_proto::checkpoint::decode_end(data) {
        assert_eq!([&n.to_le_bytes()[..], &digest[..]].concat(), data, "end frame body re-encodes");
    }
}

/// Decodes `data` as a gossip datagram (brain/src/wire.rs); whatever decodes re-encodes to a
/// datagram that decodes to the same message.
pub fn gossip_datagram(data: &[u8]) {
    let Ok(m) = mos_brain::wire::decode(data) else {
        return;
    };
    let once = mos_brain::wire::encode(&m).expect("a decoded message re-encodes");
    let again = mos_brain::wire::decode(&once).expect("re-encoded message decodes");
    assert_eq!(mos_brain::wire::encode(&again).expect("re-encodes"), once, "encoding is not stable");
}

/// Opens `data` as an authenticated envelope under a fixed key, and checks its stamp in a replay
/// window; only envelopes sealed with that key may open (with a random MAC, practically never).
pub fn auth_envelope(data: &[u8]) {
    let key = mos_proto::auth::ClusterKey::from_file_bytes(b"fuzzing key, 16+ bytes").expect("valid key");
    if let Ok((sender, stamp, body)) = key.open(data) {
        assert_eq!(key.seal(sender, stamp, body), data, "an opened envelope re-seals to the same bytes");
        let mut r = mos_proto::auth::Replay::default();
        let _ = r.check(sender, stamp, stamp >> 12);
    }
    // Sealing arbitrary bodies always opens again.
    let sealed = key.seal(7, 1 << 12, data);
    assert_eq!(key.open(&sealed).map(|(_, _, b)| b.to_vec()), Ok(data.to_vec()));
}

/// Secure streams (mos_proto::secure). The first byte picks what the rest is:
/// * 0: what a responder receives on a new connection (ticket, then handshake) under a fixed key;
///   a ticket that decodes re-encodes to the same bytes.
/// * 1: what an established stream receives (length-prefixed transport messages): garbage may
///   only fail or end, never panic, hang or allocate beyond the stream's fixed buffers.
/// * 2: a round trip: the bytes choose write sizes, read sizes and maybe one byte of the wire to
///   flip; without a flip what is read equals what was written, with one the reader gets an
///   error after at most an unchanged prefix of it.
pub fn secure_stream(data: &[u8]) {
    use mos_proto::secure::{self, SecureStream, Ticket, TICKET_LEN};
    use std::cell::RefCell;
    use std::io::{Cursor, Read, Write};
    type Pair = (SecureStream<Vec<u8>>, SecureStream<Cursor<Vec<u8>>>);
    thread_local! {
        static PAIR: RefCell<Option<Pair>> = const { RefCell::new(None) };
    }
    let key = mos_proto::auth::ClusterKey::from_file_bytes(b"fuzzing key, 16+ bytes").expect("valid key");
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let mut now = 0;
            if let Some(raw) = rest.first_chunk::<TICKET_LEN>() {
                if let Ok(t) = Ticket::decode(raw) {
                    assert_eq!(&t.encode(), raw, "a decoded ticket re-encodes to itself");
                    now = t.issued_ms;
                }
            }
            let mut io = (Cursor::new(rest), Vec::new());
            let _ = secure::respond(Duplex(&mut io), &key, now);
        }
        _ => PAIR.with(|p| {
            let mut p = p.borrow_mut();
            let (tx, rx) = p.take().unwrap_or_else(|| {
                secure::pair_in_memory(Vec::new(), Cursor::new(Vec::new()), &key, secure::PROTOCOL).expect("in-memory handshake")
            });
            let nonce = tx.sending_nonce();
            let mut tx = tx.rewire(Vec::new(), 0);
            let (wire, sent) = if mode % 3 == 1 {
                (rest.to_vec(), Vec::new())
            } else {
                // Write sizes: each of the first 16 bytes b is a write of b * 13 bytes, or of
                // 66,000 (more than one message) when b >= 0xf8.
                let mut sent = Vec::new();
                for (k, &b) in rest.iter().enumerate().take(16) {
                    let n = if b >= 0xf8 { 66_000 } else { b as usize * 13 };
                    let at = sent.len();
                    sent.extend((0..n).map(|i| (i + k) as u8));
                    tx.write_all(&sent[at..]).expect("writes to a Vec");
                }
                (std::mem::take(tx.get_mut()), sent)
            };
            let flip = (mode % 3 == 2 && mode & 0x80 != 0 && !wire.is_empty()).then(|| {
                let at = rest.iter().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(*b as usize)) % wire.len();
                at
            });
            let mut wire = wire;
            if let Some(at) = flip {
                wire[at] ^= 0x01;
            }
            let mut rx = rx.rewire(Cursor::new(wire), nonce);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut sizes = rest.iter().cycle();
            let failed = loop {
                let n = sizes.next().map_or(buf.len(), |b| (*b as usize * 397) % buf.len() + 1);
                let n = if got.len() + n < sent.len() / 2 { buf.len() } else { n };
                match rx.read(&mut buf[..n]) {
                    Ok(0) => break false,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                    Err(_) => break true,
                }
                assert!(got.len() <= sent.len().max(rest.len() * 65_536), "more read than could have been sent");
            };
            if mode % 3 == 2 {
                if flip.is_some() {
                    assert!(failed, "a flipped byte went unnoticed");
                    assert!(sent.starts_with(&got), "data read before the error was changed");
                } else {
                    assert!(!failed && got == sent, "the round trip changed the data");
                }
            }
            let tx = tx.rewire(Vec::new(), 0);
            let rx = rx.rewire(Cursor::new(Vec::new()), 0);
            *p = Some((tx, rx));
        }),
    }
}

/// Reads from the first, writes into the second.
struct Duplex<'a, R>(&'a mut (R, Vec<u8>));

impl<R: std::io::Read> std::io::Read for Duplex<'_, R> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0 .0.read(b)
    }
}

impl<R> std::io::Write for Duplex<'_, R> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 .1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `DeputyMsg` body; what the home side computes from a remote exit must not panic or report
/// success for a signal.
pub fn deputy_msg(data: &[u8]) {
    use mos_proto::deputy::DeputyMsg;
    postcard_body::<DeputyMsg>(Kind::Deputy, data);
    if let Ok(DeputyMsg::Exited { status }) = frame::decode_body::<DeputyMsg>(Kind::Deputy, data) {
        let code = status.shell_code();
        assert!((0..=255).contains(&code));
    }
}

/// Every fuzz target by name, as its `fuzz_targets/NAME.rs` runs it (the stable replay of the
/// seed corpus, `tests/replay.rs`, goes through here). None for an unknown name.
pub fn run_target(name: &str, data: &[u8]) -> Option<()> {
    use mos_proto::{control, migration};
    match name {
        "frame" => whole_frame(data),
        "pages" => pages_body(data),
        "offer" => postcard_body::<migration::Offer>(Kind::Offer, data),
        "context" => postcard_body::<migration::Context>(Kind::Context, data),
        "vmas" => postcard_body::<migration::Vmas>(Kind::Vmas, data),
        "deputy" => deputy_msg(data),
        "control_request" => postcard_body::<control::Request>(Kind::Control, data),
        "control_reply" => postcard_body::<control::Reply>(Kind::Control, data),
        "gossip" => gossip_datagram(data),
        "auth" => auth_envelope(data),
        "secure" => secure_stream(data),
        "checkpoint" => checkpoint_file(data),
        "map_update" => postcard_body::<migration::MapUpdate>(Kind::MapUpdate, data),
        _ => return None,
    }
    Some(())
}
