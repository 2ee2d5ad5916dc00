//! Fuzzes the loader of Hugging Face tokenizer.json files through `edgellm::fuzzing::tokenizer_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgellm::fuzzing::tokenizer_json(data);
});
