//! Fuzzes the GGUF loader and what is built from it via `edgellm::fuzzing::gguf`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgellm::fuzzing::gguf(data);
});
