//! Raw encoding of a `Pages` frame body: page runs then their bytes, never serde'd.
//!
//! ```text
//! u32 nruns
//! nruns × { u64 addr (page aligned), u32 npages (>= 1) }
//! Σ npages × 4096 raw bytes, in run order
//! ```
use crate::frame::{FrameError, Kind};
use crate::PAGE_SIZE;

/// At most this many pages travel in one frame (16 MiB).
pub const MAX_PAGES_PER_FRAME: usize = 4096;
/// At most this many runs in one frame.
pub const MAX_RUNS: usize = MAX_PAGES_PER_FRAME;

/// A run of consecutive pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    pub addr: u64,
    pub npages: u32,
}

impl PageRun {
    pub fn bytes(&self) -> usize {
        self.npages as usize * PAGE_SIZE
    }
}

/// Encodes the run table (the caller appends the page bytes).
pub fn encode_runs(runs: &[PageRun]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + runs.len() * 12);
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for r in runs {
        out.extend_from_slice(&r.addr.to_le_bytes());
        out.extend_from_slice(&r.npages.to_le_bytes());
    }
    out
}

fn bad(detail: impl Into<String>) -> FrameError {
    FrameError::Body { kind: Kind::Pages, detail: detail.into() }
}

/// Decodes a `Pages` body into its runs and the slice of page bytes, validating alignment, bounds,
/// overflow and that the byte count matches the runs exactly.
pub fn decode(body: &[u8]) -> Result<(Vec<PageRun>, &[u8]), FrameError> {
    let (runs, table) = decode_table(body)?;
    let pages: usize = runs.iter().map(|r| r.npages as usize).sum();
    let data = &body[table..];
    if data.len() != pages * PAGE_SIZE {
        return Err(bad(format!("{} data bytes for {pages} pages", data.len())));
    }
    Ok((runs, data))
}

/// Decodes the run table at the start of a `Pages` body (`body` may stop after it): the runs and
/// the table's length in bytes (where the page bytes start). Validates as [`decode`] does, except
/// the number of page bytes, which the caller checks against the frame length.
pub fn decode_table(body: &[u8]) -> Result<(Vec<PageRun>, usize), FrameError> {
    if body.len() < 4 {
        return Err(bad("shorter than the run count"));
    }
    let n = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if n > MAX_RUNS {
        return Err(bad(format!("{n} runs > {MAX_RUNS}")));
    }
    let table = 4 + n * 12;
    if body.len() < table {
        return Err(bad("run table truncated"));
    }
    let mut runs = Vec::with_capacity(n);
    let mut pages: usize = 0;
    for i in 0..n {
        let o = 4 + i * 12;
        let addr = u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
        let npages = u32::from_le_bytes(body[o + 8..o + 12].try_into().expect("4 bytes"));
        if addr % PAGE_SIZE as u64 != 0 {
            return Err(bad(format!("run {i} address {addr:#x} not page aligned")));
        }
        if npages == 0 {
            return Err(bad(format!("run {i} is empty")));
        }
        if addr.checked_add(u64::from(npages) * PAGE_SIZE as u64).is_none_or(|end| end > 1 << 47) {
            return Err(bad(format!("run {i} at {addr:#x} leaves the user address space")));
        }
        pages += npages as usize;
        if pages > MAX_PAGES_PER_FRAME {
            return Err(bad(format!("more than {MAX_PAGES_PER_FRAME} pages")));
        }
        runs.push(PageRun { addr, npages });
    }
    Ok((runs, table))
}
