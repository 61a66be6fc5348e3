//! Negative tests: everything a hostile or broken peer can send is refused with an error, never a
//! panic or an unbounded allocation. Plus property tests over arbitrary bytes and page-run tables.

mod common;

use common::*;
use mos_proto::control::{Command, Reply, Request};
use mos_proto::deputy::{Buf, DeputyMsg, ExitStatus};
use mos_proto::frame::{self, Header, Kind, HEADER_LEN, MAGIC, MAX_FRAME, MAX_SMALL_FRAME, MIN_VERSION, VERSION};
use mos_proto::migration::{Accept, Context, Failed, Offer, Refuse, Resumed, Vmas};
use mos_proto::pages::{self, PageRun, MAX_PAGES_PER_FRAME, MAX_RUNS};
use mos_proto::{FrameError, PAGE_SIZE};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::io::{self, Cursor, Read};

/// A header with every field chosen by the test.
fn raw_header(magic: [u8; 4], version: u16, kind: u16, len: u32, reserved: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&magic);
    h[4..6].copy_from_slice(&version.to_le_bytes());
    h[6..8].copy_from_slice(&kind.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&reserved.to_le_bytes());
    h
}

fn good(kind: u16, len: u32) -> [u8; HEADER_LEN] {
    raw_header(MAGIC, VERSION, kind, len, 0)
}

/// Checks a header is refused the same way by `Header::decode`, `parse_frame` and `read_frame`.
fn refused(h: [u8; HEADER_LEN], ok: impl Fn(&FrameError) -> bool) {
    let e = Header::decode(&h).unwrap_err();
    assert!(ok(&e), "Header::decode: {e:?}");
    // A body of the declared length, when that is small, so only the header can be at fault.
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut whole = h.to_vec();
    if len <= 64 {
        whole.resize(HEADER_LEN + len, 0);
    }
    let e = frame::parse_frame(&whole).unwrap_err();
    assert!(ok(&e), "parse_frame: {e:?}");
    let e = frame::read_frame(&mut Cursor::new(&whole)).unwrap_err();
    assert!(ok(&e), "read_frame: {e:?}");
}

fn body_err(e: &FrameError, kind: Kind, needle: &str) -> bool {
    matches!(e, FrameError::Body { kind: k, detail } if *k == kind && detail.contains(needle))
}

// ---------------------------------------------------------------- header

#[test]
fn bad_magic_is_refused() {
    for magic in [*b"MOS\x01", *b"mos\0", *b"\0SOM", [0; 4], [0xff; 4], *b"GET "] {
        refused(raw_header(magic, VERSION, Kind::Offer as u16, 0, 0), |e| matches!(e, FrameError::BadMagic(m) if *m == magic));
    }
}

#[test]
fn versions_outside_the_window_are_refused() {
    for v in [0, VERSION + 1, VERSION + 2, u16::MAX] {
        refused(raw_header(MAGIC, v, Kind::Accept as u16, 1, 0), |e| matches!(e, FrameError::Version { got } if *got == v));
    }
    if MIN_VERSION > 1 {
        let v = MIN_VERSION - 1;
        refused(raw_header(MAGIC, v, Kind::Accept as u16, 1, 0), |e| matches!(e, FrameError::Version { got } if *got == v));
    }
    // Every version in the window is accepted.
    for v in MIN_VERSION..=VERSION {
        let h = Header::decode(&raw_header(MAGIC, v, Kind::Accept as u16, 1, 0)).unwrap();
        assert_eq!(h.version, v);
    }
}

#[test]
fn invalid_and_unknown_kinds_are_refused() {
    for k in [0u16, 19, 0x100, 0x0a00, u16::MAX] {
        refused(good(k, 0), |e| matches!(e, FrameError::BadKind(n) if *n == k));
    }
}

#[test]
fn nonzero_reserved_is_refused() {
    for r in [1u32, 0x100, 0x1_0000, 0x0100_0000, u32::MAX] {
        refused(raw_header(MAGIC, VERSION, Kind::Resumed as u16, 0, r), |e| matches!(e, FrameError::Reserved(x) if *x == r));
    }
}

#[test]
fn oversized_lengths_are_refused_by_the_header() {
    for kind in [Kind::Offer, Kind::Accept, Kind::Context, Kind::Deputy, Kind::Control, Kind::Pages] {
        let limit = kind.max_body();
        assert!(Header::decode(&good(kind as u16, limit)).is_ok());
        for len in [limit + 1, limit * 2, u32::MAX] {
            let e = Header::decode(&good(kind as u16, len)).unwrap_err();
            assert!(matches!(e, FrameError::TooLarge { kind: k, len: l, limit: m } if k == kind && l == len && m == limit), "{e:?}");
        }
    }
    // A small frame may not claim a Pages-sized body.
    assert!(matches!(Header::decode(&good(Kind::Deputy as u16, MAX_FRAME)), Err(FrameError::TooLarge { .. })));
    assert!(matches!(Header::decode(&good(Kind::Control as u16, MAX_SMALL_FRAME + 1)), Err(FrameError::TooLarge { .. })));
}

/// A reader holding only a header: reading past it is a test failure (the body must never be
/// allocated or read for an oversized frame).
struct HeaderOnly {
    h: [u8; HEADER_LEN],
    pos: usize,
}

impl Read for HeaderOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(self.pos < HEADER_LEN, "read_frame read past the header of an oversized frame");
        let n = buf.len().min(HEADER_LEN - self.pos);
        buf[..n].copy_from_slice(&self.h[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn read_frame_refuses_oversized_frames_from_the_header_alone() {
    for (kind, len) in [(Kind::Offer, u32::MAX), (Kind::Pages, MAX_FRAME + 1), (Kind::Control, MAX_SMALL_FRAME + 1)] {
        let mut r = HeaderOnly { h: good(kind as u16, len), pos: 0 };
        let e = frame::read_frame(&mut r).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { kind: k, len: l, .. } if k == kind && l == len), "{e:?}");
        assert_eq!(r.pos, HEADER_LEN);
        // The same from a plain cursor of 16 bytes: TooLarge, not an end-of-stream error.
        let h = good(kind as u16, len);
        let e = frame::read_frame(&mut Cursor::new(&h[..])).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e:?}");
    }
}

/// Hands out one byte per call, with an `Interrupted` error before each.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    interrupt: bool,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.pos == self.data.len() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[self.pos];
        self.pos += 1;
        Ok(1)
    }
}

#[test]
fn read_frame_handles_short_reads_and_eof() {
    let bytes = frame::encode(Kind::Deputy, &deputy_syscall()).unwrap();
    let f = frame::read_frame(&mut Trickle { data: bytes.clone(), pos: 0, interrupt: false }).unwrap();
    assert_eq!(f.decode::<DeputyMsg>().unwrap(), deputy_syscall());

    // Nothing at all: a clean close.
    assert!(matches!(frame::read_frame(&mut Cursor::new(&[][..])), Err(FrameError::Closed)));
    // Part of a header, or part of a body: an unexpected end of stream, not a clean close.
    for cut in [1, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 1, bytes.len() - 1] {
        let e = frame::read_frame(&mut Cursor::new(&bytes[..cut])).unwrap_err();
        assert!(matches!(&e, FrameError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof), "cut {cut}: {e:?}");
    }
}

#[test]
fn parse_frame_requires_the_exact_length() {
    let bytes = frame::encode(Kind::Refuse, &refuse()).unwrap();
    for cut in 0..HEADER_LEN {
        let e = frame::parse_frame(&bytes[..cut]).unwrap_err();
        assert!(matches!(&e, FrameError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof), "{e:?}");
    }
    for cut in HEADER_LEN..bytes.len() {
        let e = frame::parse_frame(&bytes[..cut]).unwrap_err();
        assert!(body_err(&e, Kind::Refuse, "length"), "{e:?}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(body_err(&frame::parse_frame(&long).unwrap_err(), Kind::Refuse, "length"));
}

#[test]
fn expect_refuses_the_wrong_kind() {
    let f = frame::parse_frame(&frame::encode(Kind::Accept, &accept()).unwrap()).unwrap();
    let e = f.expect::<Accept>(Kind::Refuse).unwrap_err();
    assert!(matches!(e, FrameError::Unexpected { expected: Kind::Refuse, got: Kind::Accept }), "{e:?}");
}

#[test]
fn encoders_refuse_oversized_bodies() {
    let big = Refuse { reason: "x".repeat(MAX_SMALL_FRAME as usize) };
    let e = frame::encode(Kind::Refuse, &big).unwrap_err();
    assert!(matches!(e, FrameError::TooLarge { kind: Kind::Refuse, limit, .. } if limit == MAX_SMALL_FRAME), "{e:?}");
    let mut sink = Vec::new();
    assert!(frame::write_msg(&mut sink, Kind::Refuse, &big).is_err());
    assert!(sink.is_empty(), "nothing may be written for a refused frame");

    let chunk = vec![0u8; MAX_SMALL_FRAME as usize];
    let e = frame::write_raw(&mut sink, Kind::Deputy, &[&chunk[..], &[0u8][..]]).unwrap_err();
    assert!(matches!(e, FrameError::TooLarge { kind: Kind::Deputy, .. }), "{e:?}");
    assert!(sink.is_empty());
    // Exactly at the limit is fine.
    frame::write_raw(&mut sink, Kind::Deputy, &[&chunk]).unwrap();
    assert_eq!(sink.len(), HEADER_LEN + MAX_SMALL_FRAME as usize);
}

// ---------------------------------------------------------------- postcard bodies

/// Every strict prefix of a valid body fails, and so does the body with trailing bytes.
fn truncations_and_trailers_fail<T>(kind: Kind, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let body = frame::encode(kind, value).unwrap()[HEADER_LEN..].to_vec();
    assert_eq!(&frame::decode_body::<T>(kind, &body).unwrap(), value);
    for cut in 0..body.len() {
        let e = frame::decode_body::<T>(kind, &body[..cut]).unwrap_err();
        assert!(matches!(&e, FrameError::Body { kind: k, .. } if *k == kind), "{value:?} cut at {cut}: {e:?}");
    }
    for extra in [&[0u8][..], &[0xff], &[1, 2, 3]] {
        let mut b = body.clone();
        b.extend_from_slice(extra);
        let e = frame::decode_body::<T>(kind, &b).unwrap_err();
        assert!(body_err(&e, kind, &format!("{} trailing bytes", extra.len())), "{e:?}");
        // Through a whole frame too.
        let mut whole = Header::encode(kind, b.len() as u32).to_vec();
        whole.extend_from_slice(&b);
        let e = frame::parse_frame(&whole).unwrap().decode::<T>().unwrap_err();
        assert!(body_err(&e, kind, "trailing"), "{e:?}");
    }
}

#[test]
fn truncated_and_trailing_bodies_are_refused() {
    truncations_and_trailers_fail(Kind::Offer, &offer_syscall());
    truncations_and_trailers_fail(Kind::Offer, &offer_manual());
    truncations_and_trailers_fail(Kind::Offer, &offer_recall());
    truncations_and_trailers_fail(Kind::Accept, &accept());
    truncations_and_trailers_fail(Kind::Refuse, &refuse());
    truncations_and_trailers_fail(Kind::Vmas, &vmas());
    truncations_and_trailers_fail(Kind::Context, &context_full());
    truncations_and_trailers_fail(Kind::Context, &context_minimal());
    truncations_and_trailers_fail(Kind::Resumed, &resumed());
    truncations_and_trailers_fail(Kind::Failed, &failed());
    for m in
        [deputy_syscall(), deputy_reply(), deputy_signal(), DeputyMsg::Recall, deputy_exit_code(), deputy_exit_signal(), DeputyMsg::Kill]
    {
        truncations_and_trailers_fail(Kind::Deputy, &m);
    }
    for m in [request_register(), request_done_ok(), request_done_err(), request_moved(), Request::Ps, Request::Status, request_migrate()] {
        truncations_and_trailers_fail(Kind::Control, &m);
    }
    for m in [Reply::Ok, Reply::Registered { node: 3 }, reply_ps(), reply_status(), reply_migrated(), reply_error()] {
        truncations_and_trailers_fail(Kind::Control, &m);
    }
    truncations_and_trailers_fail(Kind::Control, &command_home());
    truncations_and_trailers_fail(Kind::Control, &command_node());
}

#[test]
fn malformed_postcard_values_are_refused() {
    // Unknown enum variants.
    assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &[6]).is_err());
    assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    assert!(frame::decode_body::<Request>(Kind::Control, &[6]).is_err());
    assert!(frame::decode_body::<Reply>(Kind::Control, &[6]).is_err());
    assert!(frame::decode_body::<Command>(Kind::Control, &[1]).is_err());
    assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &[4, 2, 0]).is_err(), "ExitStatus variant 2");
    // A bool other than 0/1.
    assert!(frame::decode_body::<Accept>(Kind::Accept, &[1, 2]).is_err());
    // An Option tag other than 0/1 (Context.rseq follows 27 regs, xstate, sigmask).
    let mut ctx = frame::encode(Kind::Context, &context_minimal()).unwrap()[HEADER_LEN..].to_vec();
    let rseq_tag = 1 + 27 + 1 + 1;
    assert_eq!(ctx[rseq_tag], 0);
    ctx[rseq_tag] = 2;
    assert!(frame::decode_body::<Context>(Kind::Context, &ctx).is_err());
    // Invalid UTF-8 in a string.
    assert!(frame::decode_body::<Refuse>(Kind::Refuse, &[2, 0xc3, 0x28]).is_err());
    assert!(frame::decode_body::<Failed>(Kind::Failed, &[1, 0xff]).is_err());
    // An over-long varint (11 bytes for a u64) and a u32 varint that overflows.
    let mut overlong = vec![0u8];
    overlong.extend([0x80; 10]);
    overlong.push(0);
    assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &overlong).is_err());
    assert!(frame::decode_body::<Resumed>(Kind::Resumed, &[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
    // An i32 signal that does not fit.
    assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
}

#[test]
fn huge_declared_lengths_fail_without_huge_allocations() {
    // A sequence claiming u32::MAX (or u64::MAX) elements in a few bytes: postcard/serde must fail
    // on the missing elements instead of reserving the claimed capacity.
    let u32max = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let u64max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    for len in [&u32max[..], &u64max[..]] {
        assert!(frame::decode_body::<Accept>(Kind::Accept, len).is_err());
        assert!(frame::decode_body::<Refuse>(Kind::Refuse, len).is_err());
        let mut vm = len.to_vec();
        vm.push(0);
        assert!(frame::decode_body::<Vmas>(Kind::Vmas, &vm).is_err());
        // DeputyMsg::Reply{seq, ret, outs: [<huge>]}.
        let mut r = vec![1, 0, 0, 1];
        r.extend_from_slice(len);
        assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &r).is_err());
        let mut ctx = vec![];
        ctx.extend_from_slice(len);
        assert!(frame::decode_body::<Context>(Kind::Context, &ctx).is_err());
        let mut offer = vec![0, 0, 0, 0, 0];
        offer.extend_from_slice(len);
        assert!(frame::decode_body::<Offer>(Kind::Offer, &offer).is_err());
    }
}

#[test]
fn exit_statuses_from_the_wire_give_sane_shell_codes() {
    // Exited{Signal{sig}} comes from the remote node: any i32 must map to 128..=255 without
    // overflowing (128 + i32::MAX used to panic in debug builds).
    for sig in [i32::MIN, -1, 0, 1, 9, 15, 64, 127, 128, 255, i32::MAX - 127, i32::MAX] {
        let m = DeputyMsg::Exited { status: ExitStatus::Signal { sig, core: false } };
        let bytes = frame::encode(Kind::Deputy, &m).unwrap();
        let DeputyMsg::Exited { status } = frame::parse_frame(&bytes).unwrap().decode().unwrap() else {
            panic!("not Exited");
        };
        let code = status.shell_code();
        assert!((128..=255).contains(&code), "sig {sig} -> {code}");
    }
    assert_eq!(ExitStatus::Signal { sig: 9, core: true }.shell_code(), 137);
    assert_eq!(ExitStatus::Signal { sig: 64, core: false }.shell_code(), 192);
    for (c, want) in [(0, 0), (3, 3), (255, 255), (256, 0), (-1, 255), (i32::MIN, 0), (i32::MAX, 255)] {
        assert_eq!(ExitStatus::Code(c).shell_code(), want, "code {c}");
    }
}

#[test]
fn wrong_type_for_a_body_is_an_error_not_a_panic() {
    // Decoding any valid body as every other type: errors or (harmless) values, never a panic.
    let bodies: Vec<Vec<u8>> = vec![
        frame::encode(Kind::Offer, &offer_syscall()).unwrap(),
        frame::encode(Kind::Context, &context_full()).unwrap(),
        frame::encode(Kind::Vmas, &vmas()).unwrap(),
        frame::encode(Kind::Deputy, &deputy_syscall()).unwrap(),
        frame::encode(Kind::Control, &reply_status()).unwrap(),
    ];
    for b in &bodies {
        let b = &b[HEADER_LEN..];
        let _ = frame::decode_body::<Offer>(Kind::Offer, b);
        let _ = frame::decode_body::<Accept>(Kind::Accept, b);
        let _ = frame::decode_body::<Vmas>(Kind::Vmas, b);
        let _ = frame::decode_body::<Context>(Kind::Context, b);
        let _ = frame::decode_body::<DeputyMsg>(Kind::Deputy, b);
        let _ = frame::decode_body::<Request>(Kind::Control, b);
        let _ = frame::decode_body::<Reply>(Kind::Control, b);
        let _ = frame::decode_body::<Command>(Kind::Control, b);
        let _ = pages::decode(b);
    }
}

// ---------------------------------------------------------------- pages

fn page_body(runs: &[(u64, u32)], data_len: usize) -> Vec<u8> {
    let runs: Vec<PageRun> = runs.iter().map(|&(addr, npages)| PageRun { addr, npages }).collect();
    let mut b = pages::encode_runs(&runs);
    b.resize(b.len() + data_len, 0x5a);
    b
}

fn pages_refused(body: &[u8], needle: &str) {
    let e = pages::decode(body).unwrap_err();
    assert!(body_err(&e, Kind::Pages, needle), "wanted {needle:?}, got {e:?}");
}

#[test]
fn page_bodies_shorter_than_the_run_count_are_refused() {
    for n in 0..4 {
        pages_refused(&[0u8; 4][..n], "shorter");
    }
}

#[test]
fn misaligned_page_addresses_are_refused() {
    for addr in [1u64, 0x40_0001, 0x40_0800, 0x40_0fff, (1 << 47) - 1] {
        pages_refused(&page_body(&[(addr, 1)], PAGE_SIZE), "not page aligned");
    }
    // The second run is checked too.
    pages_refused(&page_body(&[(0x1000, 1), (0x3008, 1)], 2 * PAGE_SIZE), "run 1 address");
}

#[test]
fn zero_page_runs_are_refused() {
    pages_refused(&page_body(&[(0x1000, 0)], 0), "run 0 is empty");
    pages_refused(&page_body(&[(0x1000, 1), (0x3000, 0)], PAGE_SIZE), "run 1 is empty");
}

#[test]
fn page_data_length_must_match_the_runs() {
    let runs = [(0x1000, 2), (0x8000, 1)];
    assert!(pages::decode(&page_body(&runs, 3 * PAGE_SIZE)).is_ok());
    for len in [0, 1, PAGE_SIZE, 3 * PAGE_SIZE - 1, 3 * PAGE_SIZE + 1, 4 * PAGE_SIZE] {
        pages_refused(&page_body(&runs, len), "data bytes");
    }
    // Data with no runs.
    pages_refused(&page_body(&[], 1), "data bytes");
    pages_refused(&page_body(&[], PAGE_SIZE), "data bytes");
}

#[test]
fn truncated_run_tables_are_refused() {
    let full = page_body(&[(0x1000, 1), (0x3000, 1)], 0);
    for cut in 4..full.len() {
        pages_refused(&full[..cut], "run table truncated");
    }
    // A count claiming MAX_RUNS runs with no table behind it.
    pages_refused(&(MAX_RUNS as u32).to_le_bytes(), "run table truncated");
}

#[test]
fn too_many_runs_are_refused() {
    for n in [MAX_RUNS as u32 + 1, 100_000, u32::MAX] {
        let mut b = n.to_le_bytes().to_vec();
        b.resize(4 + 12 * 8, 0);
        pages_refused(&b, "runs >");
    }
}

#[test]
fn too_many_pages_are_refused() {
    // Two runs adding up to MAX_PAGES_PER_FRAME + 1 pages (no data needed: counted before).
    let n = MAX_PAGES_PER_FRAME as u32;
    pages_refused(&page_body(&[(0x1000_0000, n), (0x2000_0000, 1)], 0), "more than");
    pages_refused(&page_body(&[(0x1000_0000, n + 1)], 0), "more than");
    pages_refused(&page_body(&[(0x1000_0000, u32::MAX)], 0), "more than");
}

#[test]
fn runs_leaving_the_user_address_space_are_refused() {
    let top = 1u64 << 47;
    // Ending exactly at the top is accepted; one page further is not.
    assert!(pages::decode(&page_body(&[(top - 4096, 1)], PAGE_SIZE)).is_ok());
    pages_refused(&page_body(&[(top - 4096, 2)], 2 * PAGE_SIZE), "leaves the user address space");
    pages_refused(&page_body(&[(top, 1)], PAGE_SIZE), "leaves the user address space");
    pages_refused(&page_body(&[(0xffff_8000_0000_0000, 1)], PAGE_SIZE), "leaves");
    // u64 overflow of addr + len.
    pages_refused(&page_body(&[(u64::MAX - 4095, 1)], PAGE_SIZE), "leaves");
    pages_refused(&page_body(&[(u64::MAX - 4095, u32::MAX)], 0), "leaves");
    pages_refused(&page_body(&[(0x1000, 1), (top, 1)], 2 * PAGE_SIZE), "run 1 at");
}

#[test]
fn page_frames_through_the_frame_layer() {
    // A Pages header cannot claim more than MAX_FRAME; its body is validated by pages::decode.
    let body = page_body(&[(0x1000, 1)], PAGE_SIZE - 1);
    let mut out = Vec::new();
    frame::write_raw(&mut out, Kind::Pages, &[&body]).unwrap();
    let f = frame::read_frame(&mut Cursor::new(&out)).unwrap();
    assert!(pages::decode(&f.body).is_err());
    // A Pages body is not postcard: decode_body of a Pages frame must not be relied on, but must not panic.
    let _ = f.decode::<Accept>();
}

// ---------------------------------------------------------------- properties

fn arb_runs() -> impl Strategy<Value = Vec<PageRun>> {
    // Up to 16 runs of 1..=8 pages anywhere in the user address space (overlaps are not the
    // decoder's business).
    prop::collection::vec((0u64..(1 << 35) - 8, 1u32..=8).prop_map(|(page, npages)| PageRun { addr: page << 12, npages }), 0..16)
}

fn arb_buf() -> impl Strategy<Value = Buf> {
    prop_oneof![
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..32)).prop_map(|(arg, data)| Buf::In { arg, data }),
        (any::<u8>(), any::<u32>(), any::<bool>()).prop_map(|(arg, len, by_ret)| Buf::Out { arg, len, by_ret }),
    ]
}

fn arb_deputy() -> impl Strategy<Value = DeputyMsg> {
    prop_oneof![
        (any::<u64>(), any::<u32>(), any::<[u64; 6]>(), prop::collection::vec(arb_buf(), 0..4))
            .prop_map(|(seq, nr, args, bufs)| DeputyMsg::Syscall { seq, nr, args, bufs }),
        (any::<u64>(), any::<i64>(), prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..4))
            .prop_map(|(seq, ret, outs)| DeputyMsg::Reply { seq, ret, outs }),
        any::<i32>().prop_map(|sig| DeputyMsg::Signal { sig }),
        Just(DeputyMsg::Recall),
        any::<i32>().prop_map(|c| DeputyMsg::Exited { status: ExitStatus::Code(c) }),
        (any::<i32>(), any::<bool>()).prop_map(|(sig, core)| DeputyMsg::Exited { status: ExitStatus::Signal { sig, core } }),
        Just(DeputyMsg::Kill),
    ]
}

/// Arbitrary bytes behind a valid header of `kind` with the matching length.
fn framed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut v = Header::encode(kind, body.len() as u32).to_vec();
    v.extend_from_slice(body);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_frame_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = frame::parse_frame(&bytes);
        let _ = frame::read_frame(&mut Cursor::new(&bytes));
        if bytes.len() >= HEADER_LEN {
            let _ = Header::decode(bytes[..HEADER_LEN].try_into().unwrap());
        }
    }

    #[test]
    fn parse_frame_with_a_magic_prefix_never_panics(
        version in 0u16..4, kind in 0u16..12, len in prop_oneof![0u32..64, any::<u32>()],
        reserved in prop_oneof![Just(0u32), any::<u32>()], body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = raw_header(MAGIC, version, kind, len, reserved).to_vec();
        b.extend_from_slice(&body);
        if let Ok(f) = frame::parse_frame(&b) {
            prop_assert_eq!(f.body.len(), len as usize);
            prop_assert_eq!(f.kind as u16, kind);
            prop_assert_eq!(reserved, 0);
        }
        let _ = frame::read_frame(&mut Cursor::new(&b));
    }

    #[test]
    fn body_decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in [Kind::Offer, Kind::Context, Kind::Vmas, Kind::Deputy, Kind::Control, Kind::Pages] {
            let f = frame::parse_frame(&framed(kind, &body)).unwrap();
            prop_assert_eq!(&f.body, &body);
        }
        let _ = frame::decode_body::<Offer>(Kind::Offer, &body);
        let _ = frame::decode_body::<Accept>(Kind::Accept, &body);
        let _ = frame::decode_body::<Refuse>(Kind::Refuse, &body);
        let _ = frame::decode_body::<Vmas>(Kind::Vmas, &body);
        let _ = frame::decode_body::<Context>(Kind::Context, &body);
        let _ = frame::decode_body::<Resumed>(Kind::Resumed, &body);
        let _ = frame::decode_body::<Failed>(Kind::Failed, &body);
        let _ = frame::decode_body::<DeputyMsg>(Kind::Deputy, &body);
        let _ = frame::decode_body::<Request>(Kind::Control, &body);
        let _ = frame::decode_body::<Reply>(Kind::Control, &body);
        let _ = frame::decode_body::<Command>(Kind::Control, &body);
    }

    #[test]
    fn pages_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok((runs, data)) = pages::decode(&bytes) {
            // Only a body with no pages fits in 256 bytes.
            prop_assert!(data.is_empty());
            prop_assert_eq!(runs.iter().map(|r| r.npages as usize).sum::<usize>(), 0);
        }
    }

    #[test]
    fn pages_decode_never_panics_on_plausible_tables(
        runs in prop::collection::vec((any::<u64>(), prop_oneof![0u32..4, any::<u32>()]), 0..8),
        nruns_delta in -2i64..=2, extra in 0usize..3,
    ) {
        let pages: u64 = runs.iter().map(|r| u64::from(r.1)).sum();
        let data = if pages <= 8 { pages as usize * PAGE_SIZE + extra } else { extra };
        let mut b = page_body(&runs, data);
        let n = (runs.len() as i64 + nruns_delta).max(0) as u32;
        b[0..4].copy_from_slice(&n.to_le_bytes());
        if let Ok((got, bytes)) = pages::decode(&b) {
            prop_assert_eq!(got.len(), n as usize);
            for r in &got {
                prop_assert_eq!(r.addr % PAGE_SIZE as u64, 0);
                prop_assert!(r.npages >= 1);
                prop_assert!(r.addr + r.bytes() as u64 <= 1 << 47);
            }
            prop_assert_eq!(bytes.len(), got.iter().map(|r| r.bytes()).sum::<usize>());
        }
    }

    #[test]
    fn page_run_tables_round_trip(runs in arb_runs(), seed in any::<u8>()) {
        let table = pages::encode_runs(&runs);
        prop_assert_eq!(table.len(), 4 + 12 * runs.len());
        let npages: usize = runs.iter().map(|r| r.npages as usize).sum();
        let data: Vec<u8> = (0..npages * PAGE_SIZE).map(|i| (i / PAGE_SIZE) as u8 ^ seed).collect();
        let mut body = table.clone();
        body.extend_from_slice(&data);
        let (got, bytes) = pages::decode(&body).unwrap();
        prop_assert_eq!(&got, &runs);
        prop_assert_eq!(bytes, &data[..]);

        // And through a whole frame.
        let mut out = Vec::new();
        frame::write_raw(&mut out, Kind::Pages, &[&table, &data]).unwrap();
        let f = frame::parse_frame(&out).unwrap();
        prop_assert_eq!(f.kind, Kind::Pages);
        let (got, bytes) = pages::decode(&f.body).unwrap();
        prop_assert_eq!(&got, &runs);
        prop_assert_eq!(bytes, &data[..]);
    }

    #[test]
    fn deputy_messages_round_trip(m in arb_deputy()) {
        let bytes = frame::encode(Kind::Deputy, &m).unwrap();
        let f = frame::parse_frame(&bytes).unwrap();
        prop_assert_eq!(f.expect::<DeputyMsg>(Kind::Deputy).unwrap(), m.clone());
        let body = &bytes[HEADER_LEN..];
        for cut in 0..body.len() {
            prop_assert!(frame::decode_body::<DeputyMsg>(Kind::Deputy, &body[..cut]).is_err());
        }
    }

    #[test]
    fn single_byte_corruptions_never_panic(pos in any::<prop::sample::Index>(), val in any::<u8>(), which in 0usize..5) {
        let bytes = match which {
            0 => frame::encode(Kind::Offer, &offer_syscall()).unwrap(),
            1 => frame::encode(Kind::Context, &context_full()).unwrap(),
            2 => frame::encode(Kind::Vmas, &vmas()).unwrap(),
            3 => frame::encode(Kind::Control, &reply_ps()).unwrap(),
            _ => frame::encode(Kind::Deputy, &deputy_syscall()).unwrap(),
        };
        let mut b = bytes.clone();
        let i = pos.index(b.len());
        b[i] = val;
        if let Ok(f) = frame::parse_frame(&b) {
            let _ = f.decode::<Offer>();
            let _ = f.decode::<Context>();
            let _ = f.decode::<Vmas>();
            let _ = f.decode::<Reply>();
            let _ = f.decode::<DeputyMsg>();
        }
    }
}
