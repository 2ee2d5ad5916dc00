//! Any chain over any logits — NaN, ±inf, all banned, empty, huge or tiny temperatures — returns a
//! token without panicking, and never a token that was impossible while a possible one existed.

use edgellm::runtime::SamplingParams;
use edgellm::sampling::{Penalties, Pick, Rng, Sampler, Stage};

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn random_logit(rng: &mut Rng) -> f32 {
    match pick(rng, 12) {
        0 => f32::NAN,
        1 => f32::NEG_INFINITY,
        2 => f32::INFINITY,
        3 => 0.0,
        4 => 1e30,
        _ => (rng.next_f64() * 20.0 - 10.0) as f32,
    }
}

fn random_stage(rng: &mut Rng) -> Stage {
    match pick(rng, 6) {
        0 => Stage::LogitBias,
        1 => Stage::Penalties(Penalties {
            repetition: 1.5,
            presence: 0.5,
            frequency: -0.3,
        }),
        2 => Stage::Temperature([1e-30, 0.3, 1.0, 7.0][pick(rng, 4)]),
        3 => Stage::TopK(pick(rng, 12) as u32),
        4 => Stage::TopP([1e-6, 0.3, 0.9, 1.0][pick(rng, 4)]),
        _ => Stage::MinP([0.0, 0.05, 0.5, 1.0][pick(rng, 4)]),
    }
}

#[test]
fn random_chains_over_hostile_logits() {
    let mut rng = Rng::new(77);
    for round in 0..20_000 {
        let n = pick(&mut rng, 10);
        let logits: Vec<f32> = (0..n).map(|_| random_logit(&mut rng)).collect();
        let history: Vec<u32> = (0..pick(&mut rng, 6))
            .map(|_| pick(&mut rng, 12) as u32)
            .collect();
        let stages: Vec<Stage> = (0..pick(&mut rng, 6))
            .map(|_| random_stage(&mut rng))
            .collect();
        let pick_kind = if pick(&mut rng, 3) == 0 {
            Pick::Greedy
        } else {
            Pick::Random
        };
        let mut s = Sampler::with_stages(stages.clone(), pick_kind, round).unwrap();
        let bias: Vec<(u32, f32)> = (0..pick(&mut rng, 3))
            .map(|_| {
                (
                    pick(&mut rng, 12) as u32,
                    [f32::NEG_INFINITY, -3.0, 4.0][pick(&mut rng, 3)],
                )
            })
            .collect();
        s.set_logit_bias(bias.clone()).unwrap();
        let t = s.sample(&mut logits.clone(), &history);
        let ctx =
            format!("logits {logits:?} stages {stages:?} bias {bias:?} history {history:?} -> {t}");
        if n == 0 {
            assert_eq!(t, 0, "{ctx}");
            continue;
        }
        assert!((t as usize) < n, "{ctx}");
        // With no bias and no stage that could move logits, a finite-or-+inf token exists iff
        // the draw must land on one.
        if bias.is_empty() && stages.iter().all(|s| !matches!(s, Stage::Penalties(_))) {
            let possible = |l: f32| !l.is_nan() && l != f32::NEG_INFINITY;
            if logits.iter().any(|&l| possible(l)) {
                assert!(possible(logits[t as usize]), "{ctx}");
            }
        }
    }
}

#[test]
fn default_chains_over_hostile_logits() {
    let mut rng = Rng::new(78);
    for round in 0..5_000 {
        let n = 1 + pick(&mut rng, 300);
        let logits: Vec<f32> = (0..n).map(|_| random_logit(&mut rng)).collect();
        let p = SamplingParams {
            temperature: [0.0, 1e-30, 0.7, 1.0, 3.0][pick(&mut rng, 5)],
            top_k: [0, 1, 5, 1000][pick(&mut rng, 4)],
            top_p: [1.0, 0.9, 0.01][pick(&mut rng, 3)],
            min_p: [0.0, 0.1, 1.0][pick(&mut rng, 3)],
            repetition_penalty: [1.0, 1.3][pick(&mut rng, 2)],
            presence_penalty: [0.0, 0.4][pick(&mut rng, 2)],
            frequency_penalty: [0.0, -0.4][pick(&mut rng, 2)],
            seed: round,
        };
        let mut s = Sampler::new(&p).unwrap();
        let t = s.sample(&mut logits.clone(), &[0, 1, 1, 2]);
        assert!((t as usize) < n, "{p:?} {logits:?} -> {t}");
    }
}
