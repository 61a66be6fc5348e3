//! The migration stream. Sender is the node where the process is now; receiver is the target.
//!
//! ```text
//! sender                         receiver
//!   Offer  ───────────────────▶   checks cpu/vDSO/files, prepares a stub task
//!          ◀───────────────────   Accept{files_present} | Refuse{reason}
//!   Vmas   ───────────────────▶   rebuilds the memory map in the stub
//!   Pages* ───────────────────▶   fills pages (zero, untouched and same-file pages are never sent)
//!   (pre-copy: the process still runs at the sender; more rounds of
//!    MapUpdate? Pages* follow, then the sender freezes it and sends
//!    its last MapUpdate? and Pages*)
//!   Context ──────────────────▶   registers, xstate, mm fields, signals, rseq ...
//!          ◀───────────────────   Resumed{remote_pid} | Failed{reason}
//!   (sender releases the memory; the connection becomes the deputy channel)
//! ```
//! Post-copy (`mosctl migrate --lazy`): after `Vmas` the sender sends `LazyAreas`, then the pages
//! of the other areas only, and `Context`; the receiver resumes the process with the lazy areas
//! registered with userfaultfd. Then, until the lazy phase ends:
//! ```text
//!          ◀───────────────────   PageRequest{addr,npages}   (a fault; answered first)
//!   Pages* ───────────────────▶   requested pages, and every other non-zero page (pushed)
//!   LazyEnd ──────────────────▶   all pushed: the receiver closes the userfaultfd
//!          ◀───────────────────   LazyDone{}                 the sender frees its copy
//! ```
//! Until the sender has read `Resumed`, the process can always continue where it was.
use serde::{Deserialize, Serialize};

/// Why a migration happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// An administrator or user asked (`mosctl migrate`).
    Manual,
    /// The home node recalled the process (`mosctl migrate PID home`, or on the way to another node).
    Recall,
    /// The remote component made a system call that only the home node can run.
    Syscall { nr: u32, name: String },
}

/// What the receiver must match to run the process: same xstate layout and vDSO image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Size of the NT_X86_XSTATE regset.
    pub xstate_len: u32,
    /// XCR0 feature bits (from the xstate's software-reserved area).
    pub xfeatures: u64,
    /// FNV-1a of the vDSO image; differing kernels have differing vDSOs.
    pub vdso_hash: u64,
    pub vdso_len: u64,
}

/// A file that backs a private mapping, identified so the receiver can map its own copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    /// FNV-1a of the first 4 KiB (ELF header, program headers, build-id note in practice).
    pub head_hash: u64,
}

/// Sent first: the process summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub reason: Reason,
    /// Pid of the process at its home node.
    pub home_pid: u32,
    pub home_node: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: String,
    /// Bytes of all VMAs (address-space size).
    pub vm_bytes: u64,
    pub cpu: CpuInfo,
    pub files: Vec<FileRef>,
}

/// The receiver takes the process; `files_present[i]` says whether `Offer.files[i]` is identical there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub files_present: Vec<bool>,
}

/// The receiver declines; the process stays where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    pub reason: String,
}

/// Protection bits of a VMA.
pub const PROT_R: u8 = 1;
pub const PROT_W: u8 = 2;
pub const PROT_X: u8 = 4;

/// What backs a VMA on the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backing {
    /// Anonymous private memory (including the heap and copies of files the receiver lacks).
    Anon,
    /// The main stack (mapped MAP_GROWSDOWN).
    Stack,
    /// Private mapping of `Offer.files[file]` at `offset`; only pages that differ from the file are sent.
    File { file: u32, offset: u64 },
}

/// One VMA of the migrated address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u8,
    pub backing: Backing,
}

/// Kernel-provided areas that are moved, never copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Vdso,
    Vvar,
    VvarVclock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialArea {
    pub kind: SpecialKind,
    pub start: u64,
    pub len: u64,
}

/// The memory map, sent before any page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vmas {
    pub vmas: Vec<Vma>,
    pub special: Vec<SpecialArea>,
}

/// A page-aligned address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// Pre-copy: the memory map as it is now at the sender, which changed since the last `Vmas` or
/// `MapUpdate` while the process ran (areas mapped, unmapped, grown, moved, re-protected), and
/// ranges whose copy at the receiver is no longer right. The receiver unmaps what `vmas` no longer
/// covers, maps afresh what it newly covers (or covers with another backing), and keeps the pages
/// of everything else. Special areas never change. Sent before the pages that need it; a long
/// `fresh`/`discard` list travels in several frames with the same `vmas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapUpdate {
    /// The whole memory map now (same rules as `Vmas.vmas`: sorted, disjoint, page aligned).
    pub vmas: Vec<Vma>,
    /// Ranges mapped anew at the sender (munmap then mmap at the same place): the receiver maps
    /// them afresh, dropping their pages; their content follows in `Pages`.
    pub fresh: Vec<Range>,
    /// Pages the receiver has but the sender no longer has populated (madvise(DONTNEED) and the
    /// like): the receiver drops them too (zero for anonymous memory, the file's data for a file).
    pub discard: Vec<Range>,
}

/// mm fields restored with PR_SET_MM_MAP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// A non-default signal disposition (kernel `struct sigaction` layout on x86-64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub sig: u8,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub ptr: u64,
    pub len: u32,
    pub sig: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

/// Number of u64 words in x86-64 `struct user_regs_struct`.
pub const NREGS: usize = 27;

/// The CPU and kernel context, sent after the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// `struct user_regs_struct` as 27 words (r15 .. gs), with the syscall-restart fix-up already applied
    /// and orig_rax = -1.
    pub regs: Vec<u64>,
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    pub rseq: Option<Rseq>,
    pub mm: MmFields,
    pub auxv: Vec<u8>,
    pub personality: u32,
    pub comm: String,
    pub robust_list: Option<(u64, u64)>,
    pub tid_address: u64,
    pub sigactions: Vec<SigAction>,
    pub altstack: Option<AltStack>,
    /// Resource limits `(resource, soft, hard)` the remote task is held to (RLIMIT_CORE excepted:
    /// a guest never dumps core on its host).
    pub rlimits: Vec<(u8, u64, u64)>,
}

/// The receiver runs the process now; the sender may release its copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub remote_pid: u32,
}

/// Either side aborts; the process continues where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub reason: String,
}

/// Statistics of one migration, as CRIU keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// From freeze to the process running again (at the target, or at home after a failure).
    pub frozen_us: u64,
    /// From the request to the end.
    pub total_us: u64,
    pub rounds: u32,
    pub pages_scanned: u64,
    pub pages_sent: u64,
    pub pages_skipped_zero: u64,
    pub pages_skipped_absent: u64,
    pub pages_skipped_file: u64,
    pub bytes_sent: u64,
    /// Post-copy: from `Resumed` to the receiver holding every page (0 otherwise).
    pub lazy_us: u64,
    /// Post-copy: page requests the sender served for faults of the running process.
    pub faults: u64,
}

impl Stats {
    /// Throughput of the page stream in MB/s (10^6 bytes), over the whole migration (pre-copy
    /// streams while the process runs), or the frozen time when no total is known.
    pub fn mb_per_s(&self) -> f64 {
        let us = if self.total_us > 0 { self.total_us } else { self.frozen_us };
        if us == 0 {
            return 0.0;
        }
        self.bytes_sent as f64 / us as f64
    }
}

/// 64-bit FNV-1a; stable across builds (used for vDSO and file fingerprints).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Post-copy: the areas (page-aligned `[start, end)`, sorted, disjoint, each inside one VMA of the
/// map) whose pages are not sent before `Context` but fetched on fault and pushed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyAreas {
    pub ranges: Vec<(u64, u64)>,
}

/// Post-copy: the process faulted at `addr`; send the `npages` pages from there first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub addr: u64,
    pub npages: u32,
}

/// Post-copy: the sender has sent every non-zero page of the lazy areas (`pushed` of them
/// unasked); pages never sent are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyEnd {
    pub pushed: u64,
}

/// Post-copy: the receiver has every page; the process no longer needs the sender's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyDone {
    pub faults: u64,
}
