//! Fuzzes the safetensors loader (header JSON, tensor table) via `edgellm::fuzzing::safetensors_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgellm::fuzzing::safetensors_header(data);
});
