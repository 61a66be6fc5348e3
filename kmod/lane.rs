// SPDX-License-Identifier: GPL-2.0
//! One end of the kernel lane (feature bit LANE): a stream socket between the module of the node
//! where a process runs (intercept.rs sends its calls) and the module of its home node (deputy.rs
//! runs them and answers). The records, little-endian (mos_proto::lane):
//! a call of [`LANE_CALL_LEN`] bytes (`seq` u64, `nr` u32, zero u32, `args` 6 x u64) and a reply
//! of [`LANE_REPLY_LEN`] bytes (`seq` u64, `ret` i64). Sends never block; a record whose first
//! bytes came is waited for to its end, killable only (its sender sent it whole).
use crate::abi::{LANE_CALL_LEN, LANE_REPLY_LEN};
use crate::sys::Sock;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;

/// Why a lane operation did not complete.
pub(crate) enum LaneErr {
    /// The call could not be sent (its peer is gone): it was not made.
    NotSent,
    /// The calling task was killed while it waited.
    Killed,
    /// The lane is no longer usable (its peer is gone, or it broke the format): the reason.
    Broken(&'static str),
}

/// A lane socket and whether it still serves.
pub(crate) struct Lane {
    sock: Sock,
    dead: AtomicBool,
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

impl Lane {
    pub(crate) fn new(sock: Sock) -> Lane {
        Lane { sock, dead: AtomicBool::new(false) }
    }

    /// Whether it still serves.
    pub(crate) fn live(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }

    /// Stops using it and ends the stream (its peer sees the end). Whether it served until now
    /// (the caller then says why, once).
    pub(crate) fn fail(&self) -> bool {
        let was_live = !self.dead.swap(true, Ordering::AcqRel);
        self.sock.shutdown();
        was_live
    }

    /// Ends the stream without marking it failed (its owner goes away): a task waiting on it wakes.
    pub(crate) fn shutdown(&self) {
        self.sock.shutdown();
    }

    /// Sleeps until a record begins to arrive on a live lane (or `state` no longer holds
    /// `while_is`); see [`Sock::wait`].
    pub(crate) fn wait(lane: Option<&Lane>, state: &AtomicU32, while_is: u32, killable: bool) -> Result {
        Sock::wait(lane.filter(|l| l.live()).map(|l| &l.sock), Some(state), while_is, killable)
    }

    /// Fills `buf` from `got` on: the rest of a record.
    fn fill(&self, buf: &mut [u8], mut got: usize) -> core::result::Result<(), LaneErr> {
        while got < buf.len() {
            match self.sock.recv(&mut buf[got..]) {
                Ok(Some(n)) => got += n,
                Ok(None) => Sock::wait(Some(&self.sock), None, 0, true).map_err(|_| LaneErr::Killed)?,
                Err(_) => return Err(LaneErr::Broken("its peer is gone")),
            }
        }
        Ok(())
    }

    /// Sends call `nr(args)` as record `seq` and waits (killable) for its result.
    pub(crate) fn call(&self, seq: u64, nr: u32, args: &[u64; 6]) -> core::result::Result<i64, LaneErr> {
        let mut m = [0u8; LANE_CALL_LEN];
        m[0..8].copy_from_slice(&seq.to_le_bytes());
        m[8..12].copy_from_slice(&nr.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            m[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        self.sock.send_all(&m).map_err(|_| LaneErr::NotSent)?;
        let mut r = [0u8; LANE_REPLY_LEN];
        self.fill(&mut r, 0)?;
        if word(&r, 0) != seq {
            return Err(LaneErr::Broken("a reply out of sequence"));
        }
        Ok(word(&r, 8) as i64)
    }

    /// The next call, if one has begun to arrive: `(seq, nr, args)`.
    pub(crate) fn next_call(&self) -> core::result::Result<Option<(u64, u32, [u64; 6])>, LaneErr> {
        let mut m = [0u8; LANE_CALL_LEN];
        let got = match self.sock.recv(&mut m) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(None),
            Err(_) => return Err(LaneErr::Broken("its peer is gone")),
        };
        self.fill(&mut m, got)?;
        if m[12..16] != [0; 4] {
            return Err(LaneErr::Broken("a malformed call"));
        }
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = word(&m, 16 + 8 * i);
        }
        Ok(Some((word(&m, 0), u32::from_le_bytes(m[8..12].try_into().unwrap_or_default()), args)))
    }

    /// Sends the result of call `seq`.
    pub(crate) fn reply(&self, seq: u64, ret: i64) -> Result {
        let mut m = [0u8; LANE_REPLY_LEN];
        m[0..8].copy_from_slice(&seq.to_le_bytes());
        m[8..16].copy_from_slice(&ret.to_le_bytes());
        self.sock.send_all(&m)
    }
}
