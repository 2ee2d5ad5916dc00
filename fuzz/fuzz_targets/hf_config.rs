//! Fuzzes the loader of Hugging Face config.json files through `edgellm::fuzzing::hf_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgellm::fuzzing::hf_config(data);
});
