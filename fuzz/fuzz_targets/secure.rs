#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mos_proto_fuzz::secure_stream(data);
});
