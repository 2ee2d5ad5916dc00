//! The sampler's stages leave exactly the tokens, with exactly the logits, that the reference
//! implementations leave: Hugging Face transformers' logits processors and warpers (temperature,
//! top-k, top-p, min-p, repetition penalty, one-token sequence bias, and all of them chained as
//! `generate()` chains them)
//! and llama.cpp's penalties sampler (presence and frequency penalties). Goldens come from
//! `tests/fixtures/gen_sampling_golden.py`.

mod common;

use edgellm::runtime::SamplingParams;
use edgellm::sampling::Sampler;

fn f(v: &serde_json::Value, key: &str, default: f32) -> f32 {
    v.get(key)
        .and_then(|x| x.as_f64())
        .map_or(default, |x| x as f32)
}

#[test]
fn stages_match_transformers_and_llama_cpp() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sampling/golden.json"
    ))
    .unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let params = SamplingParams {
            temperature: f(p, "temperature", 1.0),
            top_k: p.get("top_k").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
            top_p: f(p, "top_p", 1.0),
            min_p: f(p, "min_p", 0.0),
            repetition_penalty: f(p, "repetition_penalty", 1.0),
            presence_penalty: f(p, "presence_penalty", 0.0),
            frequency_penalty: f(p, "frequency_penalty", 0.0),
            seed: 1,
        };
        let mut logits: Vec<f32> = common::json_f32s(&case["logits"]);
        let history: Vec<u32> = common::json_ids(&case["history"]);
        let expected: Vec<(u32, f32)> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
            .collect();

        let mut sampler = Sampler::new(&params).unwrap();
        sampler.set_logit_bias(common::json_logit_bias(p)).unwrap();
        let mut got: Vec<(u32, f32)> = sampler
            .candidates(&mut logits, &history)
            .iter()
            .map(|c| (c.id, c.logit))
            .collect();
        got.sort_by_key(|e| e.0);
        let got_ids: Vec<u32> = got.iter().map(|e| e.0).collect();
        let want_ids: Vec<u32> = expected.iter().map(|e| e.0).collect();
        assert_eq!(got_ids, want_ids, "{name}: surviving tokens differ");
        for ((id, g), (_, w)) in got.iter().zip(&expected) {
            // Same float32 operations in the same order: the results agree bit for bit.
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name}: token {id} logit {g} vs reference {w}"
            );
        }
        // Sampling draws from exactly that set.
        let mut logits2: Vec<f32> = common::json_f32s(&case["logits"]);
        let t = sampler.sample(&mut logits2, &history);
        assert!(
            want_ids.binary_search(&t).is_ok(),
            "{name}: sampled token {t} was filtered out"
        );
    }
}
