//! Reading and writing another process's memory: process_vm_readv/writev for bulk data, and
//! /proc/PID/mem (FOLL_FORCE) for small reads of areas that may be read-only.
use crate::Error;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;

/// Reads `len` bytes at `addr` through /proc/PID/mem (works on any readable or forced mapping).
pub fn read_mem(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::File::open(&path).map_err(|e| Error::Proc { path: path.clone(), source: e })?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr).map_err(|e| Error::Proc { path, source: e })?;
    Ok(buf)
}

/// Writes bytes at `addr` through /proc/PID/mem (FOLL_FORCE: also into read-only private mappings).
pub fn write_mem(pid: Pid, addr: u64, data: &[u8]) -> Result<(), Error> {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| Error::Proc { path: path.clone(), source: e })?;
    f.write_all_at(data, addr).map_err(|e| Error::Proc { path, source: e })
}

/// Gathers the remote ranges `(addr, len)` into `buf` (consecutively). Returns bytes read.
pub fn readv(pid: Pid, ranges: &[(u64, usize)], buf: &mut [u8]) -> Result<usize, Error> {
    let mut done = 0usize;
    // process_vm_readv takes at most IOV_MAX remote iovecs per call.
    for chunk in ranges.chunks(512) {
        let remote: Vec<RemoteIoVec> = chunk.iter().map(|(a, l)| RemoteIoVec { base: *a as usize, len: *l }).collect();
        let want: usize = chunk.iter().map(|(_, l)| l).sum();
        let mut got = 0;
        while got < want {
            let mut local = [IoSliceMut::new(&mut buf[done + got..done + want])];
            // Skip remote iovecs already fully read.
            let mut skip = got;
            let mut rem = Vec::new();
            for r in &remote {
                if skip >= r.len {
                    skip -= r.len;
                    continue;
                }
                rem.push(RemoteIoVec { base: r.base + skip, len: r.len - skip });
                skip = 0;
            }
            let n = process_vm_readv(pid, &mut local, &rem).map_err(|e| Error::Sys {
                what: "process_vm_readv",
                pid: pid.as_raw(),
                errno: e,
            })?;
            if n == 0 {
                return Err(Error::Sys { what: "process_vm_readv (short)", pid: pid.as_raw(), errno: nix::errno::Errno::EFAULT });
            }
            got += n;
        }
        done += want;
    }
    Ok(done)
}

/// Scatters `data` (consecutive) into the remote ranges `(addr, len)`.
pub fn writev(pid: Pid, ranges: &[(u64, usize)], data: &[u8]) -> Result<(), Error> {
    let mut off = 0usize;
    for chunk in ranges.chunks(512) {
        let want: usize = chunk.iter().map(|(_, l)| l).sum();
        let mut got = 0;
        while got < want {
            let mut skip = got;
            let mut rem = Vec::new();
            for (a, l) in chunk {
                if skip >= *l {
                    skip -= *l;
                    continue;
                }
                rem.push(RemoteIoVec { base: *a as usize + skip, len: *l - skip });
                skip = 0;
            }
            let local = [IoSlice::new(&data[off + got..off + want])];
            let n =
                process_vm_writev(pid, &local, &rem).map_err(|e| Error::Sys { what: "process_vm_writev", pid: pid.as_raw(), errno: e })?;
            if n == 0 {
                return Err(Error::Sys { what: "process_vm_writev (short)", pid: pid.as_raw(), errno: nix::errno::Errno::EFAULT });
            }
            got += n;
        }
        off += want;
    }
    Ok(())
}

/// Reads pagemap entries for `npages` pages from `addr`.
pub fn pagemap(pid: Pid, addr: u64, npages: usize) -> Result<Vec<crate::procfs::PageInfo>, Error> {
    let path = format!("/proc/{pid}/pagemap");
    let f = std::fs::File::open(&path).map_err(|e| Error::Proc { path: path.clone(), source: e })?;
    let mut raw = vec![0u8; npages * 8];
    f.read_exact_at(&mut raw, addr / 4096 * 8).map_err(|e| Error::Proc { path, source: e })?;
    Ok(raw.chunks_exact(8).map(|c| crate::procfs::PageInfo(u64::from_le_bytes(c.try_into().expect("8 bytes")))).collect())
}
