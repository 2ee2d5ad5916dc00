//! The integer reference against the float path: dequantized weights times dequantized
//! activations, which differs from it only by float rounding.

use super::*;
use crate::quant::dequantize_row;
use crate::tensor::DType;

/// Relative tolerance against Σ|w·x|: both sides round each block's product once or twice in f32.
const REL_TOL: f32 = 1e-5;

pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn dtype(f: WeightFormat) -> DType {
    match f {
        WeightFormat::Q4_0 => DType::Q4_0,
        WeightFormat::Q4_1 => DType::Q4_1,
        WeightFormat::Q5_0 => DType::Q5_0,
        WeightFormat::Q5_1 => DType::Q5_1,
        WeightFormat::Q8_0 => DType::Q8_0,
        WeightFormat::Q4K => DType::Q4K,
        WeightFormat::Q5K => DType::Q5K,
        WeightFormat::Q6K => DType::Q6K,
    }
}

const ALL: [WeightFormat; 8] = [
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q8_0,
    WeightFormat::Q4K,
    WeightFormat::Q5K,
    WeightFormat::Q6K,
];

/// Random blocks with every f16 scale a modest finite value.
pub(crate) fn random_weights(f: WeightFormat, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut w: Vec<u8> = (0..n / f.block_elems() * f.block_bytes()).map(|_| rng.next_u64() as u8).collect();
    let fields: &[usize] = match f {
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => &[0],
        WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
        WeightFormat::Q6K => &[208],
    };
    for blk in w.chunks_exact_mut(f.block_bytes()) {
        for &o in fields {
            let v = half::f16::from_f32(rng.uniform() * 0.05);
            blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    w
}

#[test]
fn f16_conversion_matches_half_on_every_value() {
    for bits in 0..=u16::MAX {
        let a = f16_to_f32(bits);
        let b = half::f16::from_bits(bits).to_f32();
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{bits:#x}: {a} vs {b}");
    }
}

#[test]
fn quantize_row_round_trips_within_half_a_step() {
    let mut rng = Rng(11);
    let x: Vec<f32> = (0..96).map(|_| rng.uniform() * 3.0).collect();
    let mut a = Q8Acts::default();
    a.reshape(1, 96);
    let (qs, d, s, bs) = a.row_parts_mut(0);
    quantize_row(&x, qs, d, s, bs);
    let r = a.row(0);
    for (i, v) in x.iter().enumerate() {
        let back = r.qs[i] as f32 * r.d[i / 32];
        assert!((back - v).abs() <= r.d[i / 32] * 0.5 + 1e-7, "{i}: {v} vs {back}");
    }
    let sum0: i32 = r.qs[..32].iter().map(|&q| q as i32).sum();
    assert!((r.s[0] - r.d[0] * sum0 as f32).abs() <= 1e-6);
    assert_eq!(r.bsums[1] as i32, r.qs[16..32].iter().map(|&q| q as i32).sum::<i32>());
}

#[test]
fn integer_dot_matches_dequantized_float_dot_on_every_format() {
    let mut rng = Rng(0x5EED);
    for f in ALL {
        for blocks in [1usize, 3, 5] {
            let n = blocks * f.block_elems();
            let w = random_weights(f, n, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let mut a = Q8Acts::default();
            a.reshape(1, n);
            let (qs, d, s, bs) = a.row_parts_mut(0);
            quantize_row(&x, qs, d, s, bs);
            let r = a.row(0);
            let mut wf = vec![0f32; n];
            dequantize_row(dtype(f), &w, &mut wf).unwrap();
            let xf: Vec<f32> = (0..n).map(|i| r.qs[i] as f32 * r.d[i / 32]).collect();
            let want: f32 = wf.iter().zip(&xf).map(|(a, b)| a * b).sum();
            let mag: f32 = wf.iter().zip(&xf).map(|(a, b)| (a * b).abs()).sum();
            let got = dot_row(f, &w, &r);
            assert!((got - want).abs() <= REL_TOL * mag + 1e-6, "{f:?} n={n}: {got} vs {want} (mag {mag})");
        }
    }
}
