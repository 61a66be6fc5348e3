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
        assert!(
            data.len() > kind.max_body() as usize,
            "a decodable body failed to re-encode"
        );
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
        assert_eq!(
            Header::encode(f.kind, f.body.len() as u32),
            data[..HEADER_LEN]
        );
    }
    // The stream reader agrees with the slice parser.
    let g = frame::read_frame(&mut std::io::Cursor::new(data))
        .expect("read_frame agrees with parse_frame");
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
