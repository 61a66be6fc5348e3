#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_proto::deputy::DeputyMsg;
use mos_proto::frame::{self, Kind};

fuzz_target!(|data: &[u8]| {
    mos_proto_fuzz::postcard_body::<DeputyMsg>(Kind::Deputy, data);
    // What the home side computes from a remote exit must not panic or report success for a signal.
    if let Ok(DeputyMsg::Exited { status }) = frame::decode_body::<DeputyMsg>(Kind::Deputy, data) {
        let code = status.shell_code();
        assert!((0..=255).contains(&code));
    }
});
