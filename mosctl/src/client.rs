//! One request, one reply, over mosd's control socket.
use mos_proto::control::{Reply, Request};
use mos_proto::frame::{self, Kind};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub fn ask(control: &Path, req: &Request) -> Result<Reply, String> {
    let mut c = UnixStream::connect(control)
        .map_err(|e| format!("cannot reach mosd at {} ({e}); is mosd running? (set --control or MOS_SOCKET)", control.display()))?;
    frame::write_msg(&mut c, Kind::Control, req).map_err(|e| format!("cannot talk to mosd: {e}"))?;
    let reply: Reply =
        frame::read_frame(&mut c).and_then(|f| f.expect(Kind::Control)).map_err(|e| format!("no valid reply from mosd: {e}"))?;
    match reply {
        Reply::Error { message } => Err(message),
        r => Ok(r),
    }
}
