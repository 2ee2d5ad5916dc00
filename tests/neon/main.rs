//! The aarch64 NEON kernels (src/ffi/simd/neon.rs) against the scalar integer reference
//! (src/quant/int8.rs), as a standalone program: rustc 1.63 from Debian cross-compiles it with no
//! crates and qemu-aarch64 runs it (scripts/test_neon_qemu.sh), because rustup's aarch64 target
//! cannot be installed here. It mounts the very files the library ships, so what passes here is
//! what runs on a Jetson.
//!
//! For every weight format, on row counts that are not multiples of the 4-row tile, one block
//! and many blocks, one token and odd token counts, both kernel variants (`SDOT` and plain NEON)
//! are called explicitly and must equal `int8::dot_row` within `REL_TOL` of Σ|w·x|; the
//! quantizer must equal `int8::quantize_row`. Prints one line per format and variant; exits 1 on
//! any mismatch. `--require-sdot` makes a missing `dotprod` CPU feature a failure (the script
//! passes it on qemu's default CPU, which has it, so the `SDOT` path cannot be skipped silently).
//!
//! Cargo also discovers this file as an integration test on the host; there it is empty (the
//! kernels only build for aarch64, and the host's own SIMD sets are covered by
//! tests/cpu_kernels_match_reference.rs).
#![cfg(all(target_arch = "aarch64", not(test)))]
// rustc 1.63 flags the `unsafe` blocks inside `unsafe fn`s that later compilers require.
#![allow(unused_unsafe)]

#[allow(dead_code)]
#[path = "../../src/quant/int8.rs"]
mod int8;
#[allow(dead_code)]
#[path = "../../src/ffi/simd/kinds.rs"]
mod kinds;
#[path = "../../src/ffi/simd/neon.rs"]
mod neon;
#[allow(dead_code)]
#[path = "../../src/quant/packed.rs"]
mod packed;
#[path = "../../src/ffi/simd/neon_packed.rs"]
mod neon_packed;

pub use kinds::*;

use int8::{Q8Acts, WeightFormat, QK8, QKK};
use neon::Dot;

/// Kernels reorder the f32 additions of per-block products (each exact in integers before
/// scaling), so they may differ from the reference by a few f32 roundings per block: relative to
/// Σ|w·x| that stays under 1e-5 (the same bound as tests/cpu_kernels_match_reference.rs).
const REL_TOL: f32 = 1e-5;

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

/// Matrix-vector cases: (rows, blocks per row).
const MATVEC: [(usize, usize); 9] = [
    (1, 1),
    (2, 1),
    (3, 2),
    (4, 1),
    (5, 3),
    (7, 3),
    (17, 5),
    (33, 9),
    (64, 20),
];

/// Matrix-matrix cases: (rows, blocks per row, tokens).
const GEMM: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (4, 1, 4),
    (3, 1, 5),
    (5, 2, 3),
    (19, 3, 7),
    (37, 4, 13),
    (8, 2, 2),
    (64, 8, 32),
];

/// xorshift64, as the host kernel test uses.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// Finite f16 bits of either sign, mostly normal with magnitudes 2^-14..2^-2, sometimes
    /// subnormal or zero (random bytes would give NaN/Inf scales).
    fn f16_scale(&mut self) -> [u8; 2] {
        let r = self.next_u64();
        let sign = ((r >> 20) & 1) as u16;
        let exp = match r % 16 {
            0 => 0,
            _ => 1 + ((r >> 8) % 13) as u16,
        };
        let man = ((r >> 32) & 0x3FF) as u16;
        ((sign << 15) | (exp << 10) | man).to_le_bytes()
    }
}

/// Random weight blocks with finite f16 scales.
fn random_weights(f: WeightFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols / f.block_elems() * f.block_bytes();
    let mut w: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let fields: &[usize] = match f {
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => &[0],
        WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
        WeightFormat::Q6K => &[208],
    };
    for blk in w.chunks_exact_mut(f.block_bytes()) {
        for &o in fields {
            let h = rng.f16_scale();
            blk[o..o + 2].copy_from_slice(&h);
        }
    }
    w
}

fn f16(b: &[u8], at: usize) -> f32 {
    int8::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Dequantizes one row by the GGUF block layouts (written out independently of the kernels),
/// only to bound Σ|w·x| for the tolerance.
fn dequantize(f: WeightFormat, row: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    for blk in row.chunks_exact(f.block_bytes()) {
        match f {
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
                let (has_m, five) = (
                    matches!(f, WeightFormat::Q4_1 | WeightFormat::Q5_1),
                    matches!(f, WeightFormat::Q5_0 | WeightFormat::Q5_1),
                );
                let d = f16(blk, 0);
                let m = if has_m { f16(blk, 2) } else { 0.0 };
                let at = if has_m { 4 } else { 2 };
                let qh = if five {
                    u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]])
                } else {
                    0
                };
                let qs = &blk[if five { at + 4 } else { at }..];
                let offset = match f {
                    WeightFormat::Q4_0 => 8.0,
                    WeightFormat::Q5_0 => 16.0,
                    _ => 0.0,
                };
                for i in 0..32 {
                    let nib = if i < 16 {
                        qs[i] & 0x0F
                    } else {
                        qs[i - 16] >> 4
                    } as u32;
                    let q = nib | (((qh >> i) & 1) << 4);
                    out.push(d * (q as f32 - offset) + m);
                }
            }
            WeightFormat::Q8_0 => {
                out.extend(blk[2..34].iter().map(|&q| f16(blk, 0) * (q as i8) as f32))
            }
            WeightFormat::Q4K | WeightFormat::Q5K => {
                let (d, dmin) = (f16(blk, 0), f16(blk, 2));
                let five = f == WeightFormat::Q5K;
                let qs = &blk[if five { 48 } else { 16 }..];
                for sub in 0..8 {
                    let (sc, m) = int8::scale_min_k4(sub, &blk[4..16]);
                    for l in 0..32 {
                        let byte = qs[sub / 2 * 32 + l];
                        let mut q = if sub % 2 == 0 { byte & 0x0F } else { byte >> 4 } as u32;
                        if five {
                            q |= ((blk[16 + l] as u32 >> sub) & 1) << 4;
                        }
                        out.push(d * sc as f32 * q as f32 - dmin * m as f32);
                    }
                }
            }
            WeightFormat::Q6K => {
                let d = f16(blk, 208);
                for i in 0..QKK {
                    let (half, l) = (i / 128, i % 128);
                    let (part, e) = (l / 32, l % 32);
                    let byte = blk[half * 64 + (part % 2) * 32 + e];
                    let low = if part < 2 { byte & 0x0F } else { byte >> 4 };
                    let high = (blk[128 + half * 32 + e] >> (2 * part)) & 3;
                    let sc = blk[192 + half * 8 + part * 2 + e / 16] as i8 as f32;
                    out.push(d * sc * (((high << 4) | low) as f32 - 32.0));
                }
            }
        }
    }
    out
}

fn magnitude(f: WeightFormat, row: &[u8], x: &[f32]) -> f32 {
    dequantize(f, row)
        .iter()
        .zip(x)
        .map(|(a, b)| (a * b).abs())
        .sum::<f32>()
        + 1e-6
}

fn quantized(x: &[f32], rows: usize, cols: usize) -> Q8Acts {
    let mut a = Q8Acts::default();
    a.reshape(rows, cols);
    for (i, xr) in x.chunks_exact(cols).enumerate() {
        let (qs, d, s, bs) = a.row_parts_mut(i);
        int8::quantize_row(xr, qs, d, s, bs);
    }
    a
}

/// Tally of one format and variant.
#[derive(Default)]
struct Tally {
    cases: usize,
    values: usize,
    failures: usize,
    /// Largest |kernel - reference| / tolerance seen.
    worst: f32,
}

impl Tally {
    fn check(&mut self, what: &str, got: f32, want: f32, tol: f32) {
        self.values += 1;
        let ratio = (got - want).abs() / tol;
        if !(ratio <= 1.0) {
            self.failures += 1;
            if self.failures <= 5 {
                eprintln!("MISMATCH {what}: kernel {got} vs reference {want} (tolerance {tol})");
            }
        }
        if ratio > self.worst || ratio.is_nan() {
            self.worst = ratio;
        }
    }
}

fn check_matvec(dot: Dot, f: WeightFormat, rng: &mut Rng, t: &mut Tally) {
    let kernel = neon::dot_rows_kernel(dot, f);
    for &(rows, blocks) in MATVEC.iter() {
        let cols = blocks * f.block_elems();
        let w = random_weights(f, rows, cols, rng);
        let x: Vec<f32> = (0..cols).map(|_| rng.uniform() * 2.0).collect();
        let xq = quantized(&x, 1, cols);
        let rb = w.len() / rows;
        let mut want = vec![0f32; rows];
        int8::dot_rows(f, &w, rb, &xq.row(0), &mut want);
        // Sentinels after the output catch a store past the last row.
        let mut got = vec![f32::NAN; rows + 4];
        // SAFETY: `dot.available()` was checked by the caller; lengths are consistent.
        unsafe { kernel(&w, rb, &xq.row(0), &mut got[..rows]) };
        t.cases += 1;
        for r in 0..rows {
            let tol = REL_TOL * magnitude(f, &w[r * rb..(r + 1) * rb], &x);
            t.check(
                &format!("{dot:?} {f:?} matvec {rows}x{cols} row {r}"),
                got[r],
                want[r],
                tol,
            );
        }
        if got[rows..].iter().any(|v| !v.is_nan()) {
            t.failures += 1;
            eprintln!("MISMATCH {dot:?} {f:?} matvec {rows}x{cols}: wrote past the last row");
        }
    }
}

fn check_gemm(dot: Dot, f: WeightFormat, rng: &mut Rng, t: &mut Tally) {
    let kernel = neon::gemm_kernel(dot, f);
    for &(rows, blocks, tokens) in GEMM.iter() {
        let cols = blocks * f.block_elems();
        let w = random_weights(f, rows, cols, rng);
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform()).collect();
        let xq = quantized(&x, tokens, cols);
        let ldo = rows + 3;
        let rb = w.len() / rows;
        let mut want = vec![f32::NAN; tokens * ldo];
        int8::gemm(f, &w, rb, rows, &xq, &mut want, ldo);
        let mut got = vec![f32::NAN; tokens * ldo];
        // SAFETY: `dot.available()` was checked by the caller; `got` holds `tokens * ldo` values.
        unsafe { kernel(&w, rb, rows, &xq, &mut got, ldo) };
        t.cases += 1;
        for tk in 0..tokens {
            for r in 0..rows {
                let tol = REL_TOL
                    * magnitude(f, &w[r * rb..(r + 1) * rb], &x[tk * cols..(tk + 1) * cols]);
                t.check(
                    &format!("{dot:?} {f:?} gemm {rows}x{cols}, {tokens} tokens, [{tk},{r}]"),
                    got[tk * ldo + r],
                    want[tk * ldo + r],
                    tol,
                );
            }
            if got[tk * ldo + rows..(tk + 1) * ldo]
                .iter()
                .any(|v| !v.is_nan())
            {
                t.failures += 1;
                eprintln!("MISMATCH {dot:?} {f:?} gemm {rows}x{cols}, {tokens} tokens: wrote into the ldo padding of token {tk}");
            }
        }
    }
}

/// The packed-layout kernels (`neon_packed`, `SDOT` by lane) on weights packed by
/// `packed::pack_matrix`, against `int8::gemm` on the GGUF rows: partial last groups, one token
/// and every token-tile tail.
fn check_packed(f: WeightFormat, rng: &mut Rng, t: &mut Tally) {
    let kernel = match neon_packed::gemm_fn(f) {
        Some(k) => k,
        None => return,
    };
    let cases: [(usize, usize, usize); 7] = [(1, 1, 1), (15, 2, 3), (16, 3, 1), (17, 5, 7), (33, 9, 1), (48, 4, 6), (70, 2, 13)];
    for &(rows, blocks, tokens) in cases.iter() {
        let cols = blocks * f.block_elems();
        let w = random_weights(f, rows, cols, rng);
        let rb = w.len() / rows;
        let p = packed::pack_matrix(f, &w, rb, rows);
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform() * 2.0).collect();
        let xq = quantized(&x, tokens, cols);
        let ldo = rows + 3;
        let mut want = vec![f32::NAN; tokens * ldo];
        int8::gemm(f, &w, rb, rows, &xq, &mut want, ldo);
        let mut got = vec![f32::NAN; tokens * ldo];
        // SAFETY: the caller checked `dotprod`; `got` holds `tokens * ldo` values.
        unsafe { kernel(&p, rows, &xq, &mut got, ldo) };
        t.cases += 1;
        for tk in 0..tokens {
            for r in 0..rows {
                let tol = REL_TOL * magnitude(f, &w[r * rb..(r + 1) * rb], &x[tk * cols..(tk + 1) * cols]);
                t.check(&format!("packed {f:?} {rows}x{cols}, {tokens} tokens, [{tk},{r}]"), got[tk * ldo + r], want[tk * ldo + r], tol);
            }
            if got[tk * ldo + rows..(tk + 1) * ldo].iter().any(|v| !v.is_nan()) {
                t.failures += 1;
                eprintln!("MISMATCH packed {f:?} {rows}x{cols}: wrote into the ldo padding of token {tk}");
            }
        }
    }
}

/// The NEON quantizer against `int8::quantize_row`; returns the number of failures.
fn check_quantize(rng: &mut Rng) -> usize {
    let kernel = match neon::quantize_fn(KernelSet::Neon) {
        Some(k) => k,
        None => {
            eprintln!("MISMATCH: no NEON quantizer");
            return 1;
        }
    };
    let mut failures = 0;
    let mut values = 0;
    for &cols in [32usize, 96, 576, 640, 2048].iter() {
        let rows = 3;
        let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() * 4.0).collect();
        x[..32].iter_mut().for_each(|v| *v = 0.0); // an all-zero block must give d = 0 and zero quants
        x[32..64]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 15.5); // exact .5 multiples
        let want = quantized(&x, rows, cols);
        let mut got = Q8Acts::default();
        got.reshape(rows, cols);
        for (i, xr) in x.chunks_exact(cols).enumerate() {
            let (qs, d, s, bs) = got.row_parts_mut(i);
            // SAFETY: NEON is part of every aarch64 CPU; the slices were sized by `reshape`.
            unsafe { kernel(xr, qs, d, s, bs) };
        }
        for b in 0..want.d.len() {
            values += 1;
            if got.d[b].to_bits() != want.d[b].to_bits() {
                failures += 1;
                eprintln!(
                    "MISMATCH quantize {cols} cols: scale {b}: {} vs {}",
                    got.d[b], want.d[b]
                );
            }
        }
        for (i, (&g, &e)) in got.qs.iter().zip(&want.qs).enumerate() {
            values += 1;
            // Ties at exactly .5 may round either way (half-to-even vs half-away).
            let v = x[i] / want.d[i / QK8].max(f32::MIN_POSITIVE);
            let tie = (v.abs().fract() - 0.5).abs() < 1e-3;
            if !(g == e || (tie && (g as i32 - e as i32).abs() == 1)) {
                failures += 1;
                eprintln!("MISMATCH quantize {cols} cols: quant {i}: {g} vs {e} (x/d = {v})");
            }
        }
        for (h, &bs) in got.bsums.iter().enumerate() {
            values += 1;
            let sum: i32 = got.qs[h * 16..h * 16 + 16].iter().map(|&q| q as i32).sum();
            if bs as i32 != sum {
                failures += 1;
                eprintln!("MISMATCH quantize {cols} cols: bsum {h}: {bs} vs {sum}");
            }
        }
        for b in 0..got.s.len() {
            values += 1;
            let sum: i32 = got.qs[b * QK8..b * QK8 + QK8]
                .iter()
                .map(|&q| q as i32)
                .sum();
            if (got.s[b] - got.d[b] * sum as f32).abs() > got.d[b].abs() * 1e-3 + 1e-7 {
                failures += 1;
                eprintln!(
                    "MISMATCH quantize {cols} cols: s {b}: {} vs {}",
                    got.s[b],
                    got.d[b] * sum as f32
                );
            }
        }
    }
    println!(
        "quantize      : {values} values, {failures} failures {}",
        if failures == 0 { "OK" } else { "FAILED" }
    );
    failures
}

/// The library's dispatch: NEON kernels for the Neon set only, and the best variant this CPU has.
fn check_dispatch() -> usize {
    let mut failures = 0;
    for f in ALL {
        let neon_dot = neon::dot_rows_fn(KernelSet::Neon, f).map(|k| k as usize);
        let neon_gemm = neon::gemm_fn(KernelSet::Neon, f).map(|k| k as usize);
        let best = Dot::best();
        if neon_dot != Some(neon::dot_rows_kernel(best, f) as usize)
            || neon_gemm != Some(neon::gemm_kernel(best, f) as usize)
        {
            failures += 1;
            eprintln!("MISMATCH dispatch: {f:?} on the Neon set is not the {best:?} kernel");
        }
        if neon::dot_rows_fn(KernelSet::Scalar, f).is_some()
            || neon::gemm_fn(KernelSet::Scalar, f).is_some()
        {
            failures += 1;
            eprintln!("MISMATCH dispatch: {f:?} has a NEON kernel for the scalar set");
        }
    }
    if !KernelSet::Neon.available() || neon::quantize_fn(KernelSet::Scalar).is_some() {
        failures += 1;
        eprintln!("MISMATCH dispatch: the Neon set is unavailable, or the scalar set has a NEON quantizer");
    }
    println!(
        "dispatch      : best variant on this CPU is {:?}, {failures} failures {}",
        Dot::best(),
        if failures == 0 { "OK" } else { "FAILED" }
    );
    failures
}

fn main() {
    let require_sdot = std::env::args().any(|a| a == "--require-sdot");
    let mut failures = check_dispatch();
    let mut rng = Rng(0x5EED_1234_ABCD);
    failures += check_quantize(&mut rng);
    for dot in [Dot::Sdot, Dot::Plain] {
        if !dot.available() {
            if require_sdot {
                failures += 1;
                eprintln!("FAILED: --require-sdot, but this CPU reports no dotprod");
            } else {
                println!(
                    "{dot:?}: SKIPPED, this CPU has no dotprod (the Plain path is what runs here)"
                );
            }
            continue;
        }
        for f in ALL {
            let mut mv = Tally::default();
            check_matvec(dot, f, &mut rng, &mut mv);
            let mut gm = Tally::default();
            check_gemm(dot, f, &mut rng, &mut gm);
            let bad = mv.failures + gm.failures;
            failures += bad;
            println!(
                "{:<5} {:<5}: matvec {} cases {} values worst {:.3} of tol | gemm {} cases {} values worst {:.3} of tol | {}",
                format!("{dot:?}"),
                format!("{f:?}"),
                mv.cases,
                mv.values,
                mv.worst,
                gm.cases,
                gm.values,
                gm.worst,
                if bad == 0 { "OK" } else { "FAILED" }
            );
        }
    }
    if Dot::Sdot.available() {
        for f in ALL {
            if !packed::packable(f) {
                continue;
            }
            let mut pk = Tally::default();
            check_packed(f, &mut rng, &mut pk);
            failures += pk.failures;
            println!(
                "packed {:<5}: {} cases {} values worst {:.3} of tol | {}",
                format!("{f:?}"),
                pk.cases,
                pk.values,
                pk.worst,
                if pk.failures == 0 { "OK" } else { "FAILED" }
            );
        }
    }
    if failures > 0 {
        eprintln!("neon kernel tests: {failures} failures");
        std::process::exit(1);
    }
    println!("neon kernel tests: all passed");
}
