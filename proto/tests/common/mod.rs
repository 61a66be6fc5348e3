//! Representative values of every message type, shared by the golden, rejection and seed tests.
#![allow(dead_code)]

use mos_proto::control::{Command, Mode, NodeStatus, ProcRow, Reply, Request, Target};
use mos_proto::deputy::{Buf, DeputyMsg, ExitStatus};
use mos_proto::migration::{
    Accept, AltStack, Backing, Context, CpuInfo, Failed, FileRef, MapUpdate, MmFields, Offer, Range, Reason, Refuse, Resumed, Rseq,
    SigAction, SpecialArea, SpecialKind, Stats, Vma, Vmas, NREGS, PROT_R, PROT_W, PROT_X,
};
use mos_proto::pages::PageRun;

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex literal; whitespace is ignored so literals can be grouped by field.
pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len() & 1 == 0, "odd hex literal");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

pub fn offer_syscall() -> Offer {
    Offer {
        reason: Reason::Syscall { nr: 59, name: "execve".into() },
        home_pid: 1234,
        home_node: 1,
        uid: 1000,
        gid: 100,
        comm: "sleep".into(),
        exe: "/bin/sleep".into(),
        vm_bytes: 0x20_0000,
        cpu: CpuInfo { xstate_len: 2696, xfeatures: 0x2e7, vdso_hash: 0x0123_4567_89ab_cdef, vdso_len: 8192 },
        files: vec![FileRef { path: "/bin/sleep".into(), size: 35_000, mtime_ns: 1_700_000_000_123_456_789, head_hash: 0xdead_beef }],
    }
}

pub fn offer_manual() -> Offer {
    Offer {
        reason: Reason::Manual,
        home_pid: 1,
        home_node: 2,
        uid: 0,
        gid: 0,
        comm: "a".into(),
        exe: "/a".into(),
        vm_bytes: 4096,
        cpu: CpuInfo { xstate_len: 832, xfeatures: 7, vdso_hash: 1, vdso_len: 4096 },
        files: vec![],
    }
}

pub fn offer_recall() -> Offer {
    Offer {
        reason: Reason::Recall,
        home_pid: u32::MAX,
        home_node: 65536,
        uid: 65534,
        gid: 65534,
        comm: String::new(),
        exe: String::new(),
        vm_bytes: u64::MAX,
        cpu: CpuInfo { xstate_len: 0, xfeatures: 0, vdso_hash: u64::MAX, vdso_len: 0 },
        files: vec![FileRef { path: "/x".into(), size: 0, mtime_ns: -1, head_hash: 0 }],
    }
}

pub fn accept() -> Accept {
    Accept { files_present: vec![true, false, true] }
}

pub fn refuse() -> Refuse {
    Refuse { reason: "busy".into() }
}

pub fn vmas() -> Vmas {
    Vmas {
        vmas: vec![
            Vma { start: 0x40_0000, end: 0x40_1000, prot: PROT_R | PROT_X, backing: Backing::File { file: 0, offset: 0 } },
            Vma { start: 0x60_0000, end: 0x62_1000, prot: PROT_R | PROT_W, backing: Backing::Anon },
            Vma { start: 0x7ffd_0000_0000, end: 0x7ffd_0002_1000, prot: PROT_R | PROT_W, backing: Backing::Stack },
        ],
        special: vec![
            SpecialArea { kind: SpecialKind::Vvar, start: 0x7fff_f7fc_1000, len: 0x4000 },
            SpecialArea { kind: SpecialKind::VvarVclock, start: 0x7fff_f7fc_5000, len: 0x2000 },
            SpecialArea { kind: SpecialKind::Vdso, start: 0x7fff_f7fc_7000, len: 0x2000 },
        ],
    }
}

pub fn context_full() -> Context {
    Context {
        regs: (0..NREGS as u64).collect(),
        xstate: vec![1, 2, 3, 4],
        sigmask: 1 << 9,
        rseq: Some(Rseq { ptr: 0x7fff_f7d8_0fe0, len: 32, sig: 0x5305_3053 }),
        mm: MmFields {
            start_code: 0x40_0000,
            end_code: 0x40_1000,
            start_data: 0x60_0000,
            end_data: 0x60_1000,
            start_brk: 0x61_0000,
            brk: 0x62_1000,
            start_stack: 0x7ffd_0002_0000,
            arg_start: 0x7ffd_0002_0100,
            arg_end: 0x7ffd_0002_0110,
            env_start: 0x7ffd_0002_0110,
            env_end: 0x7ffd_0002_0200,
        },
        auxv: vec![6, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0],
        personality: 0,
        comm: "sleep".into(),
        robust_list: Some((0x7fff_f7d8_0a20, 24)),
        tid_address: 0x7fff_f7d8_0a10,
        sigactions: vec![SigAction { sig: 2, handler: 0x40_1234, flags: 0x0400_0000, restorer: 0x40_2000, mask: 0 }],
        altstack: Some(AltStack { sp: 0x7000_0000, flags: 0, size: 8192 }),
        rlimits: vec![(7, 1024, 4096)],
    }
}

pub fn context_minimal() -> Context {
    Context {
        regs: vec![0; NREGS],
        xstate: vec![],
        sigmask: 0,
        rseq: None,
        mm: MmFields::default(),
        auxv: vec![],
        personality: 0x0040_0000,
        comm: String::new(),
        robust_list: None,
        tid_address: 0,
        sigactions: vec![],
        altstack: None,
        rlimits: Vec::new(),
    }
}

pub fn resumed() -> Resumed {
    Resumed { remote_pid: 4321 }
}

pub fn failed() -> Failed {
    Failed { reason: "no memory".into() }
}

pub fn stats() -> Stats {
    Stats {
        frozen_us: 12_345,
        total_us: 67_890,
        rounds: 1,
        pages_scanned: 600,
        pages_sent: 300,
        pages_skipped_zero: 200,
        pages_skipped_absent: 50,
        pages_skipped_file: 50,
        bytes_sent: 300 * 4096 + 123,
        lazy_us: 0,
        faults: 0,
    }
}

pub fn deputy_syscall() -> DeputyMsg {
    DeputyMsg::Syscall {
        seq: 7,
        nr: 1,
        args: [1, 0x7fff_0000, 5, 0, 0, u64::MAX],
        bufs: vec![
            Buf::In { arg: 1, data: b"hello".to_vec() },
            Buf::Out { arg: 2, len: 64, by_ret: true },
            Buf::Out { arg: 3, len: 16, by_ret: false },
        ],
    }
}

pub fn deputy_reply() -> DeputyMsg {
    DeputyMsg::Reply { seq: 7, ret: -14, outs: vec![b"ok".to_vec(), vec![]] }
}

pub fn deputy_signal() -> DeputyMsg {
    DeputyMsg::Signal { sig: 15 }
}

pub fn deputy_exit_code() -> DeputyMsg {
    DeputyMsg::Exited { status: ExitStatus::Code(3) }
}

pub fn deputy_exit_signal() -> DeputyMsg {
    DeputyMsg::Exited { status: ExitStatus::Signal { sig: 9, core: true } }
}

pub fn request_register() -> Request {
    Request::Register { pid: 4242, uid: 1000, command: "sleep 10".into(), auto: true, mem_mb: 64 }
}

pub fn request_done_ok() -> Request {
    Request::CommandDone { id: 3, result: Ok(stats()) }
}

pub fn request_done_err() -> Request {
    Request::CommandDone { id: 4, result: Err("refused".into()) }
}

pub fn request_moved() -> Request {
    Request::Moved { node: 2 }
}

pub fn request_migrate() -> Request {
    Request::Migrate { pid: 4242, target: "home".into() }
}

pub fn proc_row() -> ProcRow {
    ProcRow { pid: 4242, home: 1, node: 2, command: "sleep 10".into(), guest: false, local_pid: None, last_migration: Some(stats()) }
}

pub fn guest_row() -> ProcRow {
    ProcRow { pid: 77, home: 3, node: 1, command: "a.out".into(), guest: true, local_pid: Some(9001), last_migration: None }
}

pub fn node_status() -> NodeStatus {
    NodeStatus {
        node: 1,
        address: "127.0.0.1:4949".into(),
        state: "up".into(),
        ncpus: 2,
        speed: 10000,
        load: 1.5,
        mem_free: 1 << 30,
        mem_total: 24 << 30,
        procs: 3,
        guests: 1,
        age_ms: 250,
        dropped_datagrams: 5,
        dropped_connections: 0,
    }
}

pub fn reply_ps() -> Reply {
    Reply::Ps { processes: vec![proc_row(), guest_row()] }
}

pub fn reply_status() -> Reply {
    Reply::Status { nodes: vec![node_status()] }
}

pub fn reply_migrated() -> Reply {
    Reply::Migrated { stats: stats() }
}

pub fn reply_error() -> Reply {
    Reply::Error { message: "no such process".into() }
}

pub fn command_home() -> Command {
    Command::Migrate { id: 1, target: Target::Home }
}

pub fn command_node() -> Command {
    Command::Migrate { id: 2, target: Target::Node { node: 2, addr: "10.0.0.2:4949".into() } }
}

/// Page runs used by the page-encoding goldens: one single page, one two-page run at the top of
/// the user address space.
pub fn page_runs() -> Vec<PageRun> {
    vec![PageRun { addr: 0x40_0000, npages: 1 }, PageRun { addr: (1 << 47) - 2 * 4096, npages: 2 }]
}

/// Page bytes for [`page_runs`]: page `i` is filled with byte `i + 1`.
pub fn page_data(runs: &[PageRun]) -> Vec<u8> {
    let pages: usize = runs.iter().map(|r| r.npages as usize).sum();
    (0..pages).flat_map(|i| std::iter::repeat_n(i as u8 + 1, mos_proto::PAGE_SIZE)).collect()
}

pub fn map_update() -> MapUpdate {
    MapUpdate {
        vmas: vmas().vmas,
        fresh: vec![Range { start: 0x60_0000, end: 0x60_2000 }],
        discard: vec![Range { start: 0x61_0000, end: 0x61_1000 }],
    }
}

pub fn request_migrate_mode() -> Request {
    Request::MigrateMode { pid: 4242, target: "2".into(), mode: Mode::StopCopy }
}

pub fn command_migrate_mode() -> Command {
    Command::MigrateMode { id: 5, target: Target::Home, mode: Mode::PreCopy }
}
