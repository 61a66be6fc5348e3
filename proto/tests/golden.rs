//! Golden bytes: pins the wire encoding of every message type. If one of these fails, the wire
//! format changed: that is a protocol version bump (frame::VERSION), never a silent edit of the hex.
//!
//! Hex literals are grouped as `magic version kind length reserved  body`; whitespace is ignored.
//! Every golden also round-trips: encode → parse_frame/read_frame → decode gives the value back.

mod common;

use common::*;
use mos_proto::control::{AdminOp, Command, Reply, Request};
use mos_proto::deputy::DeputyMsg;
use mos_proto::frame::{self, Header, Kind, HEADER_LEN, MAGIC, MAX_FRAME, MAX_SMALL_FRAME, MIN_VERSION, VERSION};
use mos_proto::migration::{
    fnv1a, Accept, Context, Failed, LazyAreas, LazyDone, LazyEnd, MapUpdate, Offer, PageRequest, Refuse, Resumed, Vmas,
};
use mos_proto::pages::{self, PageRun, MAX_PAGES_PER_FRAME, MAX_RUNS};
use mos_proto::{FrameError, PAGE_SIZE};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::io::Cursor;

/// Hex of a frame, grouped like the literals below (for the failure message).
fn grouped(b: &[u8]) -> String {
    let h = hex(b);
    if h.len() < 32 {
        return h;
    }
    format!("{} {} {} {} {}  {}", &h[0..8], &h[8..12], &h[12..16], &h[16..24], &h[24..32], &h[32..])
}

fn check<T>(name: &str, kind: Kind, value: &T, golden: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = frame::encode(kind, value).expect("encode");
    let want = unhex(golden);
    assert!(bytes == want, "golden {name} changed:\n  want {}\n  got  GOLDEN {name}: {}", grouped(&want), grouped(&bytes));

    // The header says what it carries.
    let hdr = Header::decode(bytes[..HEADER_LEN].try_into().unwrap()).expect("header");
    assert_eq!(hdr, Header { version: VERSION, kind, len: (bytes.len() - HEADER_LEN) as u32 });

    // parse_frame + decode.
    let f = frame::parse_frame(&bytes).expect("parse_frame");
    assert_eq!(f.kind, kind);
    assert_eq!(f.version, VERSION);
    assert_eq!(f.body, &bytes[HEADER_LEN..]);
    assert_eq!(&f.decode::<T>().expect("decode"), value);
    assert_eq!(&f.expect::<T>(kind).expect("expect"), value);
    assert_eq!(&frame::decode_body::<T>(kind, &f.body).expect("decode_body"), value);

    // The body is canonical: re-encoding the decoded value gives the same bytes.
    let again: T = f.decode().unwrap();
    assert_eq!(frame::encode(kind, &again).unwrap(), bytes);

    // write_msg writes the same bytes; read_frame reads back-to-back frames from a stream.
    let mut stream = Vec::new();
    frame::write_msg(&mut stream, kind, value).unwrap();
    assert_eq!(stream, bytes);
    frame::write_msg(&mut stream, kind, value).unwrap();
    let mut r = Cursor::new(stream);
    for _ in 0..2 {
        let g = frame::read_frame(&mut r).expect("read_frame");
        assert_eq!(g, f);
        assert_eq!(&g.decode::<T>().unwrap(), value);
    }
    assert!(matches!(frame::read_frame(&mut r), Err(FrameError::Closed)));
}

macro_rules! golden {
    ($name:ident, $kind:expr, $ty:ty, $value:expr, $hex:expr) => {
        #[test]
        fn $name() {
            check::<$ty>(stringify!($name), $kind, &$value, $hex);
        }
    };
}

// ---------------------------------------------------------------- constants and header

#[test]
fn constants_are_pinned() {
    assert_eq!(MAGIC, *b"MOS\0");
    assert_eq!(HEADER_LEN, 16);
    assert_eq!(VERSION, 1);
    assert_eq!(MIN_VERSION, 1);
    assert_eq!(MAX_FRAME, 17 * 1024 * 1024);
    assert_eq!(MAX_SMALL_FRAME, 2 * 1024 * 1024);
    assert_eq!(PAGE_SIZE, 4096);
    assert_eq!(MAX_PAGES_PER_FRAME, 4096);
    assert_eq!(MAX_RUNS, 4096);
    assert_eq!(mos_proto::DEFAULT_PORT, 4949);
    // A full Pages frame (run table + pages) fits in MAX_FRAME.
    assert!(4 + MAX_RUNS * 12 + MAX_PAGES_PER_FRAME * PAGE_SIZE <= MAX_FRAME as usize);
}

#[test]
fn kind_numbers_are_pinned() {
    let kinds = [
        (Kind::Offer, 1),
        (Kind::Accept, 2),
        (Kind::Refuse, 3),
        (Kind::Vmas, 4),
        (Kind::Pages, 5),
        (Kind::Context, 6),
        (Kind::Resumed, 7),
        (Kind::Failed, 8),
        (Kind::Deputy, 9),
        (Kind::Control, 10),
        (Kind::MapUpdate, 11),
        (Kind::LazyAreas, 12),
        (Kind::PageRequest, 13),
        (Kind::LazyEnd, 14),
        (Kind::LazyDone, 15),
        (Kind::CheckpointHeader, 20),
        (Kind::FileTable, 21),
        (Kind::CheckpointEnd, 22),
    ];
    assert_eq!(Kind::Invalid as u16, 0);
    assert_eq!(Kind::from_u16(0), None);
    for (k, n) in kinds {
        assert_eq!(k as u16, n);
        assert_eq!(Kind::from_u16(n), Some(k));
        let want = if k == Kind::Pages { MAX_FRAME } else { MAX_SMALL_FRAME };
        assert_eq!(k.max_body(), want, "{k:?}");
    }
    assert_eq!(Kind::from_u16(19), None);
}

#[test]
fn header_bytes_are_pinned() {
    let cases: [(Kind, u32, &str); 5] = [
        (Kind::Offer, 0, "4d4f5300 0100 0100 00000000 00000000"),
        (Kind::Accept, 1, "4d4f5300 0100 0200 01000000 00000000"),
        (Kind::Pages, MAX_FRAME, "4d4f5300 0100 0500 00001001 00000000"),
        (Kind::Deputy, 0x0102_0304, "4d4f5300 0100 0900 04030201 00000000"),
        (Kind::Control, MAX_SMALL_FRAME, "4d4f5300 0100 0a00 00002000 00000000"),
    ];
    for (kind, len, golden) in cases {
        let h = Header::encode(kind, len);
        assert_eq!(hex(&h), hex(&unhex(golden)), "{kind:?} {len}");
        if len <= kind.max_body() {
            assert_eq!(Header::decode(&h).unwrap(), Header { version: VERSION, kind, len });
        } else {
            assert!(matches!(Header::decode(&h), Err(FrameError::TooLarge { .. })));
        }
    }
}

#[test]
fn fnv1a_is_pinned() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

// ---------------------------------------------------------------- migration stream

golden!(
    offer_syscall_golden,
    Kind::Offer,
    Offer,
    offer_syscall(),
    "4d4f5300 0100 0100 50000000 00000000
     023b06657865637665d20901e8076405736c6565700a2f62696e2f736c656570
     808080018815e705ef9bafcdf8acd191018040010a2f62696e2f736c656570b8
     9102aab4aed8c7bfce972feffdb6f50d"
);
golden!(
    offer_manual_golden,
    Kind::Offer,
    Offer,
    offer_manual(),
    "4d4f5300 0100 0100 13000000 00000000
     00010200000161022f618020c0060701802000"
);
golden!(
    offer_recall_golden,
    Kind::Offer,
    Offer,
    offer_recall(),
    "4d4f5300 0100 0100 2f000000 00000000
     01ffffffff0f808004feff03feff030000ffffffffffffffffff010000ffffff
     ffffffffffff010001022f78000100"
);
golden!(accept_golden, Kind::Accept, Accept, accept(), "4d4f5300 0100 0200 04000000 00000000  03010001");
golden!(accept_empty_golden, Kind::Accept, Accept, Accept { files_present: vec![] }, "4d4f5300 0100 0200 01000000 00000000  00");
golden!(refuse_golden, Kind::Refuse, Refuse, refuse(), "4d4f5300 0100 0300 05000000 00000000  0462757379");
golden!(
    vmas_golden,
    Kind::Vmas,
    Vmas,
    vmas(),
    "4d4f5300 0100 0400 47000000 00000000
     038080800280a08002050200008080800380a08803030080808080d0ff1f80a0
     8880d0ff1f0301030180a0f0bfffff1f8080010280a0f1bfffff1f80400080e0
     f1bfffff1f8040"
);
golden!(
    context_full_golden,
    Kind::Context,
    Context,
    context_full(),
    "4d4f5300 0100 0600 b2000000 00000000
     1b000102030405060708090a0b0c0d0e0f101112131415161718191a04010203
     04800401e09fe0beffff1f20d3e09498058080800280a080028080800380a080
     038080840380a0880380808880d0ff1f80828880d0ff1f90828880d0ff1f9082
     8880d0ff1f80848880d0ff1f1006000000000000000010000000000000000573
     6c65657001a094e0beffff1f189094e0beffff1f0102b4a480028080802080c0
     800200018080808007008040 010780088020"
);
golden!(
    context_minimal_golden,
    Kind::Context,
    Context,
    context_minimal(),
    "4d4f5300 0100 0600 35000000 00000000
     1b00000000000000000000000000000000000000000000000000000000000000
     0000000000000000000000808080020000000000 00"
);
golden!(resumed_golden, Kind::Resumed, Resumed, resumed(), "4d4f5300 0100 0700 02000000 00000000  e121");
golden!(failed_golden, Kind::Failed, Failed, failed(), "4d4f5300 0100 0800 0a000000 00000000  096e6f206d656d6f7279");

// ---------------------------------------------------------------- deputy channel

golden!(
    deputy_syscall_golden,
    Kind::Deputy,
    DeputyMsg,
    deputy_syscall(),
    "4d4f5300 0100 0900 27000000 00000000
     000701018080fcff07050000ffffffffffffffffff010300010568656c6c6f01
     02400101031000"
);
golden!(deputy_reply_golden, Kind::Deputy, DeputyMsg, deputy_reply(), "4d4f5300 0100 0900 08000000 00000000  01071b02026f6b00");
golden!(deputy_signal_golden, Kind::Deputy, DeputyMsg, deputy_signal(), "4d4f5300 0100 0900 02000000 00000000  021e");
golden!(deputy_recall_golden, Kind::Deputy, DeputyMsg, DeputyMsg::Recall, "4d4f5300 0100 0900 01000000 00000000  03");
golden!(deputy_exited_code_golden, Kind::Deputy, DeputyMsg, deputy_exit_code(), "4d4f5300 0100 0900 03000000 00000000  040006");
golden!(deputy_exited_signal_golden, Kind::Deputy, DeputyMsg, deputy_exit_signal(), "4d4f5300 0100 0900 04000000 00000000  04011201");
golden!(deputy_kill_golden, Kind::Deputy, DeputyMsg, DeputyMsg::Kill, "4d4f5300 0100 0900 01000000 00000000  05");
golden!(deputy_reroute_golden, Kind::Deputy, DeputyMsg, DeputyMsg::Reroute { node: 3 }, "4d4f5300 0100 0900 02000000 00000000  0603");
golden!(
    deputy_syscall_inout_golden,
    Kind::Deputy,
    DeputyMsg,
    DeputyMsg::Syscall { seq: 1, nr: 7, args: [0; 6], bufs: vec![mos_proto::deputy::Buf::InOut { arg: 0, data: vec![1, 2] }] },
    "4d4f5300 0100 0900 0f000000 00000000  000107000000000000010200020102"
);
golden!(
    deputy_syscall_fixup_golden,
    Kind::Deputy,
    DeputyMsg,
    DeputyMsg::Syscall { seq: 1, nr: 7, args: [0; 6], bufs: vec![mos_proto::deputy::Buf::Fixup { buf: 0, at: 16, target: 1 }] },
    "4d4f5300 0100 0900 0e000000 00000000  0001070000000000000103001001"
);
golden!(
    deputy_policy_golden,
    Kind::Deputy,
    DeputyMsg,
    DeputyMsg::Policy { on_unsupported: mos_proto::deputy::OnUnsupported::FailAndTell },
    "4d4f5300 0100 0900 02000000 00000000  0702"
);
golden!(
    deputy_unsupported_golden,
    Kind::Deputy,
    DeputyMsg,
    DeputyMsg::Unsupported { nr: 99 },
    "4d4f5300 0100 0900 02000000 00000000  0863"
);

// ---------------------------------------------------------------- control socket

golden!(
    request_register_golden,
    Kind::Control,
    Request,
    request_register(),
    "4d4f5300 0100 0a00 10000000 00000000
     009221e80708736c6565702031300140"
);
golden!(
    request_done_ok_golden,
    Kind::Control,
    Request,
    request_done_ok(),
    "4d4f5300 0100 0a00 16000000 00000000
     010300b960b2920401d804ac02c8013232fb804b0000"
);
golden!(
    request_done_err_golden,
    Kind::Control,
    Request,
    request_done_err(),
    "4d4f5300 0100 0a00 0b000000 00000000  0104010772656675736564"
);
golden!(request_moved_golden, Kind::Control, Request, request_moved(), "4d4f5300 0100 0a00 02000000 00000000  0202");
golden!(request_ps_golden, Kind::Control, Request, Request::Ps, "4d4f5300 0100 0a00 01000000 00000000  03");
golden!(request_status_golden, Kind::Control, Request, Request::Status, "4d4f5300 0100 0a00 01000000 00000000  04");
golden!(request_whois_golden, Kind::Control, Request, Request::Whois { name: "2".into() }, "4d4f5300 0100 0a00 03000000 00000000  060132");
golden!(request_admin_golden, Kind::Control, Request, Request::Admin { op: AdminOp::Expel }, "4d4f5300 0100 0a00 02000000 00000000  0806");
golden!(request_best_node_golden, Kind::Control, Request, Request::BestNode { mem_mb: 64 }, "4d4f5300 0100 0a00 02000000 00000000  0740");
golden!(
    reply_whois_golden,
    Kind::Control,
    Reply,
    Reply::Whois { node: 2, address: "127.0.0.2".into() },
    "4d4f5300 0100 0a00 0c000000 00000000  0602093132372e302e302e32"
);
golden!(request_ticket_golden, Kind::Control, Request, Request::Ticket, "4d4f5300 0100 0a00 01000000 00000000  0c");
golden!(reply_ticket_none_golden, Kind::Control, Reply, Reply::Ticket { credential: None }, "4d4f5300 0100 0a00 02000000 00000000  0800");
golden!(request_migrate_golden, Kind::Control, Request, request_migrate(), "4d4f5300 0100 0a00 08000000 00000000  05922104686f6d65");

golden!(reply_ok_golden, Kind::Control, Reply, Reply::Ok, "4d4f5300 0100 0a00 01000000 00000000  00");
golden!(reply_registered_golden, Kind::Control, Reply, Reply::Registered { node: 3 }, "4d4f5300 0100 0a00 02000000 00000000  0103");
golden!(
    reply_ps_golden,
    Kind::Control,
    Reply,
    reply_ps(),
    "4d4f5300 0100 0a00 33000000 00000000
     02029221010208736c656570203130000001b960b2920401d804ac02c8013232
     fb804b00004d030105612e6f75740101a94600"
);
golden!(
    reply_status_golden,
    Kind::Control,
    Reply,
    reply_status(),
    "4d4f5300 0100 0a00 30000000 00000000
     0301010e3132372e302e302e313a3439343902757002904e000000000000f83f
     808080800480808080600301fa010500"
);
golden!(
    reply_migrated_golden,
    Kind::Control,
    Reply,
    reply_migrated(),
    "4d4f5300 0100 0a00 14000000 00000000
     04b960b2920401d804ac02c8013232fb804b0000"
);
golden!(
    reply_error_golden,
    Kind::Control,
    Reply,
    reply_error(),
    "4d4f5300 0100 0a00 11000000 00000000
     050f6e6f20737563682070726f63657373"
);

golden!(command_home_golden, Kind::Control, Command, command_home(), "4d4f5300 0100 0a00 03000000 00000000  000100");
golden!(
    command_node_golden,
    Kind::Control,
    Command,
    command_node(),
    "4d4f5300 0100 0a00 12000000 00000000
     000201020d31302e302e302e323a34393439"
);

// ---------------------------------------------------------------- pages

#[test]
fn page_run_table_is_pinned() {
    assert_eq!(hex(&pages::encode_runs(&[])), "00000000");
    let table = pages::encode_runs(&page_runs());
    let golden = "02000000  0000400000000000 01000000  00e0ffffff7f0000 02000000";
    assert_eq!(hex(&table), hex(&unhex(golden)));
    assert_eq!(page_runs()[0].bytes(), 4096);
    assert_eq!(page_runs()[1].bytes(), 8192);
}

#[test]
fn page_frame_is_pinned_and_round_trips() {
    let runs = page_runs();
    let table = pages::encode_runs(&runs);
    let data = page_data(&runs);
    let mut out = Vec::new();
    frame::write_raw(&mut out, Kind::Pages, &[&table, &data]).unwrap();
    let body_len = 4 + 2 * 12 + 3 * 4096;
    assert_eq!(body_len, 0x301c);
    assert_eq!(hex(&out[..HEADER_LEN]), hex(&unhex("4d4f5300 0100 0500 1c300000 00000000")));
    assert_eq!(&out[HEADER_LEN..HEADER_LEN + table.len()], &table[..]);
    assert_eq!(out.len(), HEADER_LEN + body_len);
    // Page bytes follow the table raw, in run order.
    let raw = &out[HEADER_LEN + table.len()..];
    assert!(raw[..4096].iter().all(|b| *b == 1));
    assert!(raw[4096..8192].iter().all(|b| *b == 2));
    assert!(raw[8192..].iter().all(|b| *b == 3));
    assert_eq!(fnv1a(raw), fnv1a(&data));

    let f = frame::parse_frame(&out).unwrap();
    assert_eq!(f.kind, Kind::Pages);
    let (got, bytes) = pages::decode(&f.body).unwrap();
    assert_eq!(got, runs);
    assert_eq!(bytes, &data[..]);

    let g = frame::read_frame(&mut Cursor::new(&out)).unwrap();
    assert_eq!(g, f);
}

#[test]
fn empty_page_frame_round_trips() {
    let table = pages::encode_runs(&[]);
    let mut out = Vec::new();
    frame::write_raw(&mut out, Kind::Pages, &[&table]).unwrap();
    assert_eq!(hex(&out), hex(&unhex("4d4f5300 0100 0500 04000000 00000000  00000000")));
    let f = frame::parse_frame(&out).unwrap();
    let (runs, data) = pages::decode(&f.body).unwrap();
    assert!(runs.is_empty());
    assert!(data.is_empty());
}

#[test]
fn full_page_frame_round_trips() {
    // The largest legal Pages frame: MAX_RUNS single-page runs.
    let runs: Vec<PageRun> = (0..MAX_RUNS as u64).map(|i| PageRun { addr: 0x1000_0000 + i * 8192, npages: 1 }).collect();
    let table = pages::encode_runs(&runs);
    let data = vec![0xa5u8; MAX_PAGES_PER_FRAME * PAGE_SIZE];
    let mut out = Vec::new();
    frame::write_raw(&mut out, Kind::Pages, &[&table, &data]).unwrap();
    let f = frame::read_frame(&mut Cursor::new(&out)).unwrap();
    let (got, bytes) = pages::decode(&f.body).unwrap();
    assert_eq!(got, runs);
    assert_eq!(bytes.len(), data.len());
}

// ---------------------------------------------------------------- pre-copy

golden!(
    map_update_golden,
    Kind::MapUpdate,
    MapUpdate,
    map_update(),
    "4d4f5300 0100 0b00 39000000 00000000
     038080800280a08002050200008080800380a08803030080808080d0ff1f80a08880d0ff1f0301018080800380c08003018080840380a08403"
);
golden!(request_migrate_mode_golden, Kind::Control, Request, request_migrate_mode(), "4d4f5300 0100 0a00 06000000 00000000  0b9221013201");
golden!(command_migrate_mode_golden, Kind::Control, Command, command_migrate_mode(), "4d4f5300 0100 0a00 04000000 00000000  02050000");

// ---------------------------------------------------------------- post-copy

golden!(
    lazy_areas_golden,
    Kind::LazyAreas,
    LazyAreas,
    LazyAreas { ranges: vec![(0x7f00_0000_0000, 0x7f00_0400_0000)] },
    "4d4f5300 0100 0c00 0f000000 00000000  018080808080e01f808080a080e01f"
);
golden!(
    page_request_golden,
    Kind::PageRequest,
    PageRequest,
    PageRequest { addr: 0x7f00_0001_0000, npages: 16 },
    "4d4f5300 0100 0d00 08000000 00000000  8080848080e01f10"
);
golden!(lazy_end_golden, Kind::LazyEnd, LazyEnd, LazyEnd { pushed: 16384 }, "4d4f5300 0100 0e00 03000000 00000000  808001");
golden!(lazy_done_golden, Kind::LazyDone, LazyDone, LazyDone { faults: 3 }, "4d4f5300 0100 0f00 01000000 00000000  03");

// ---------------------------------------------------------------- fuzz seeds

/// Writes the seed corpus of the cargo-fuzz targets in ../fuzz/corpus from the values above.
/// Run with `cargo test -p mos-proto --test golden -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use std::path::PathBuf;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let key = mos_proto::auth::ClusterKey::from_file_bytes(b"fuzzing key, 16+ bytes").unwrap();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    fn body<T: Serialize>(kind: Kind, v: &T) -> Vec<u8> {
        frame::encode(kind, v).unwrap()[HEADER_LEN..].to_vec()
    }

    put("offer", "syscall", &body(Kind::Offer, &offer_syscall()));
    put("offer", "manual", &body(Kind::Offer, &offer_manual()));
    put("offer", "recall", &body(Kind::Offer, &offer_recall()));
    put("context", "full", &body(Kind::Context, &context_full()));
    put("context", "minimal", &body(Kind::Context, &context_minimal()));
    put("vmas", "three", &body(Kind::Vmas, &vmas()));
    put("vmas", "empty", &body(Kind::Vmas, &Vmas { vmas: vec![], special: vec![] }));
    put("map_update", "one", &body(Kind::MapUpdate, &map_update()));
    for (name, m) in [
        ("syscall", deputy_syscall()),
        ("reply", deputy_reply()),
        ("signal", deputy_signal()),
        ("recall", DeputyMsg::Recall),
        ("exited_code", deputy_exit_code()),
        ("exited_signal", deputy_exit_signal()),
        ("kill", DeputyMsg::Kill),
        ("reroute", DeputyMsg::Reroute { node: 3 }),
        ("policy", DeputyMsg::Policy { on_unsupported: mos_proto::deputy::OnUnsupported::Fail }),
        ("unsupported", DeputyMsg::Unsupported { nr: 99 }),
        ("queued", DeputyMsg::Queued { info: vec![34, 0, 0, 0] }),
    ] {
        put("deputy", name, &body(Kind::Deputy, &m));
    }
    for (name, m) in [
        ("register", request_register()),
        ("done_ok", request_done_ok()),
        ("done_err", request_done_err()),
        ("moved", request_moved()),
        ("ps", Request::Ps),
        ("status", Request::Status),
        ("migrate", request_migrate()),
        ("admin", Request::Admin { op: AdminOp::Shutdown }),
        ("ticket", Request::Ticket),
    ] {
        put("control_request", name, &body(Kind::Control, &m));
    }
    for (name, m) in [
        ("ok", Reply::Ok),
        ("registered", Reply::Registered { node: 3 }),
        ("ps", reply_ps()),
        ("status", reply_status()),
        ("migrated", reply_migrated()),
        ("error", reply_error()),
        ("ticket_none", Reply::Ticket { credential: None }),
        ("ticket", Reply::Ticket { credential: Some(key.issue(1000, 100, 2, 1 << 40, [9; 16])) }),
    ] {
        put("control_reply", name, &body(Kind::Control, &m));
    }

    // Authenticated gossip envelopes under the fuzz target's key.
    put("auth", "small", &key.seal(2, 1 << 40, b"MOSG"));
    put("auth", "empty_body", &key.seal(1, 5, b""));

    // Pages bodies: empty, one page, the two-run table (pages shrunk to keep seeds small is not
    // possible: a page is always 4096 bytes, so seeds carry real pages).
    put("pages", "empty", &pages::encode_runs(&[]));
    let one = [PageRun { addr: 0x40_0000, npages: 1 }];
    let mut b = pages::encode_runs(&one);
    b.extend(page_data(&one));
    put("pages", "one_page", &b);
    let mut b = pages::encode_runs(&page_runs());
    b.extend(page_data(&page_runs()));
    put("pages", "two_runs", &b);

    // Whole frames for the frame target.
    put("frame", "offer", &frame::encode(Kind::Offer, &offer_manual()).unwrap());
    put("frame", "accept", &frame::encode(Kind::Accept, &accept()).unwrap());
    put("frame", "resumed", &frame::encode(Kind::Resumed, &resumed()).unwrap());
    put("frame", "deputy_syscall", &frame::encode(Kind::Deputy, &deputy_syscall()).unwrap());
    put("frame", "control_ps", &frame::encode(Kind::Control, &Request::Ps).unwrap());
    let mut p = Vec::new();
    frame::write_raw(&mut p, Kind::Pages, &[&pages::encode_runs(&one), &page_data(&one)]).unwrap();
    put("frame", "pages_one", &p);

    // Secure streams (first byte: the fuzz target's mode). 0: a real initiator's ticket and
    // handshake message (it stops when no answer comes).
    struct Sink(Vec<u8>);
    impl std::io::Read for Sink {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
    }
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hello = Sink(vec![0]);
    let _ = mos_proto::secure::initiate(&mut hello, &key.issue(1000, 100, 2, 1 << 40, [9; 16]));
    put("secure", "hello", &hello.0);
    // 1: transport messages (of another session: they fail to decrypt, the framing is exercised).
    let (mut tx, _) = mos_proto::secure::pair_in_memory(Vec::<u8>::new(), Vec::<u8>::new(), &key, mos_proto::secure::PROTOCOL).unwrap();
    std::io::Write::write_all(&mut tx, b"a deputy frame").unwrap();
    let mut m = vec![1];
    m.extend_from_slice(tx.get_ref());
    put("secure", "message", &m);
    // 2: round trips (write sizes), one with a flipped byte (mode byte with 0x80 set).
    put("secure", "round_trip", &[2, 5, 0xf5, 3, 0, 200]);
    put("secure", "round_trip_flip", &[0x82, 1, 2, 3]);
}

// ---------------------------------------------------------------- checkpoint files and commands

fn checkpoint_header() -> mos_proto::checkpoint::Header {
    mos_proto::checkpoint::Header {
        format: 1,
        created_unix: 1_800_000_000,
        node: 1,
        pid: 4242,
        uid: 1000,
        gid: 1000,
        command: vec!["./job".into(), "7".into()],
        cwd: "/home/u".into(),
        umask: 0o22,
    }
}

fn file_table() -> mos_proto::checkpoint::FileTable {
    use mos_proto::checkpoint::{FdEntry, FdTarget, FileTable};
    FileTable {
        fds: vec![
            FdEntry { fd: 1, flags: 0o1, offset: 0, target: FdTarget::Stdio { of: 1, what: "pipe:[9]".into() } },
            FdEntry { fd: 3, flags: 0o2102001, offset: 42, target: FdTarget::File { path: "/tmp/log".into(), size: 42 } },
            FdEntry { fd: 4, flags: 0, offset: 0, target: FdTarget::Device { path: "/dev/null".into() } },
            FdEntry { fd: 5, flags: 0o200000, offset: 3, target: FdTarget::Dir { path: "/".into() } },
            FdEntry { fd: 6, flags: 0o2, offset: 0, target: FdTarget::Tty { path: "/dev/pts/1".into() } },
        ],
    }
}

golden!(
    checkpoint_header_golden,
    Kind::CheckpointHeader,
    mos_proto::checkpoint::Header,
    checkpoint_header(),
    "4d4f5300 0100 1400 1f000000 00000000  0180a4a7da06019221e807e80702052e2f6a6f620137072f686f6d652f7512"
);
golden!(file_table_golden, Kind::FileTable, mos_proto::checkpoint::FileTable, file_table(), "4d4f5300 0100 1500 44000000 00000000  05010100030108706970653a5b395d038188222a00082f746d702f6c6f672a04000002092f6465762f6e756c6c058080040301012f060200040a2f6465762f7074732f31");
golden!(
    request_checkpoint_golden,
    Kind::Control,
    Request,
    Request::Checkpoint { pid: 4242, file: Some("/tmp/ck".into()), then: mos_proto::control::AfterCheckpoint::Stop },
    "4d4f5300 0100 0a00 0d000000 00000000  09922101072f746d702f636b01"
);
golden!(
    request_checkpoint_done_golden,
    Kind::Control,
    Request,
    Request::CheckpointDone { id: 3, result: Err("disk full".into()) },
    "4d4f5300 0100 0a00 0d000000 00000000  0a0301096469736b2066756c6c"
);
golden!(
    command_checkpoint_golden,
    Kind::Control,
    Command,
    Command::Checkpoint { id: 3, file: None, then: mos_proto::control::AfterCheckpoint::Exit },
    "4d4f5300 0100 0a00 04000000 00000000  01030002"
);
golden!(
    reply_checkpointed_golden,
    Kind::Control,
    Reply,
    Reply::Checkpointed(mos_proto::control::Checkpointed { path: "/tmp/ck.1".into(), bytes: 1 << 20, frozen_us: 25_000, total_us: 90_000 }),
    "4d4f5300 0100 0a00 14000000 00000000  07092f746d702f636b2e31808040a8c30190bf05"
);

#[test]
fn checkpoint_end_frame_is_pinned() {
    let mut c = Cursor::new(frame::encode(Kind::CheckpointHeader, &checkpoint_header()).unwrap());
    let n = mos_proto::checkpoint::seal(&mut c).unwrap();
    let bytes = c.into_inner();
    assert_eq!(n as usize, bytes.len());
    let end = &bytes[bytes.len() - mos_proto::checkpoint::END_LEN..];
    let want = "4d4f5300 0100 1600 28000000 00000000  2f000000000000005e428c5b31e0ad76e58a21f7ef8533ac86181e77951d0b97b6bfe781251776cb";
    assert!(hex(end) == want.split_whitespace().collect::<String>(), "GOLDEN end: {}", grouped(end));
    mos_proto::checkpoint::verify(&mut &bytes[..], n).expect("a sealed file verifies");
}
golden!(
    deputy_queued_golden,
    Kind::Deputy,
    DeputyMsg,
    DeputyMsg::Queued { info: vec![34, 0, 0, 0] },
    "4d4f5300 0100 0900 06000000 00000000  090422000000"
);

// ---------------------------------------------------------------- the kernel lane
golden!(deputy_lane_golden, Kind::Deputy, DeputyMsg, DeputyMsg::Lane { token: 5 }, "4d4f5300 0100 0900 02000000 00000000  0c05");
golden!(
    lane_join_golden,
    Kind::LaneJoin,
    mos_proto::deputy::LaneJoin,
    mos_proto::deputy::LaneJoin { home_node: 1, home_pid: 96, token: 5 },
    "4d4f5300 0100 2900 03000000 00000000  016005"
);
