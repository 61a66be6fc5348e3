//! The kernel lane: a TCP connection between the module (mosix.ko) of the node where a migrated
//! process runs and the module of its home node, opened by home after [`crate::deputy::LaneJoin`].
//! It carries only register-only system calls (no buffer, nothing for either daemon to do) and
//! their results, as fixed little-endian records, one call at a time (a process waits for each
//! result). Nothing in user space reads or writes these records in normal operation: the modules
//! do (kmod/intercept.rs sends calls, kmod/deputy.rs answers them). This module is their
//! definition, used by tests and the module probe.
//!
//! * [`Call`] (remote -> home, [`CALL_LEN`] bytes): `seq` u64, `nr` u32, 0 u32, `args` 6 x u64.
//! * [`Reply`] (home -> remote, [`REPLY_LEN`] bytes): `seq` u64, `ret` i64 (a negative errno for
//!   an error; -ENOSYS for a call the home side does not allow on the lane).
//!
//! A reply whose `seq` is not the call's, a call with a non-zero reserved word, or the end of the
//! stream ends the lane: the remote module then hands further calls to its daemon.

/// Bytes of a [`Call`].
pub const CALL_LEN: usize = 64;
/// Bytes of a [`Reply`].
pub const REPLY_LEN: usize = 16;

/// A system call for the deputy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub seq: u64,
    pub nr: u32,
    pub args: [u64; 6],
}

/// The result of the call `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub seq: u64,
    pub ret: i64,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    #[error("lane record of {0} bytes (a call has {CALL_LEN}, a reply {REPLY_LEN})")]
    Length(usize),
    #[error("lane call with a non-zero reserved word")]
    Reserved,
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Call {
    pub fn encode(&self) -> [u8; CALL_LEN] {
        let mut m = [0u8; CALL_LEN];
        m[0..8].copy_from_slice(&self.seq.to_le_bytes());
        m[8..12].copy_from_slice(&self.nr.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            m[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        m
    }

    pub fn decode(b: &[u8]) -> Result<Call, LaneError> {
        if b.len() != CALL_LEN {
            return Err(LaneError::Length(b.len()));
        }
        if b[12..16] != [0; 4] {
            return Err(LaneError::Reserved);
        }
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = word(b, 16 + 8 * i);
        }
        Ok(Call { seq: word(b, 0), nr: u32::from_le_bytes([b[8], b[9], b[10], b[11]]), args })
    }
}

impl Reply {
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let mut m = [0u8; REPLY_LEN];
        m[0..8].copy_from_slice(&self.seq.to_le_bytes());
        m[8..16].copy_from_slice(&self.ret.to_le_bytes());
        m
    }

    pub fn decode(b: &[u8]) -> Result<Reply, LaneError> {
        if b.len() != REPLY_LEN {
            return Err(LaneError::Length(b.len()));
        }
        Ok(Reply { seq: word(b, 0), ret: word(b, 8) as i64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_their_documented_bytes() {
        let c = Call { seq: 0x0102_0304_0506_0708, nr: 110, args: [1, 2, 3, 4, 5, u64::MAX] };
        let b = c.encode();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[8..16], &[110, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[56..64], &[0xff; 8]);
        assert_eq!(Call::decode(&b), Ok(c));
        let r = Reply { seq: 9, ret: -38 };
        let b = r.encode();
        assert_eq!(&b[8..16], &(-38i64).to_le_bytes());
        assert_eq!(Reply::decode(&b), Ok(r));
    }

    #[test]
    fn bad_records_are_refused() {
        let mut b = Call { seq: 1, nr: 2, args: [0; 6] }.encode();
        assert_eq!(Call::decode(&b[..63]), Err(LaneError::Length(63)));
        b[13] = 1;
        assert_eq!(Call::decode(&b), Err(LaneError::Reserved));
        assert_eq!(Reply::decode(&[0; 17]), Err(LaneError::Length(17)));
    }
}
