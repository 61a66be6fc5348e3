#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mos_proto_fuzz::postcard_body::<mos_proto::migration::MapUpdate>(mos_proto::Kind::MapUpdate, data);
});
