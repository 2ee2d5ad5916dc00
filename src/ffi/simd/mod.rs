//! CPU kernels that need `unsafe`: SIMD intrinsics (AVX2, AVX-512 VNNI, NEON) behind run-time CPU
//! feature detection. They live under `ffi` because, like the C boundary and the mmap, they are
//! where Rust hands control to something the compiler cannot check (here: which instructions the
//! CPU has). Everything outside calls the safe wrappers below, which check lengths and pick the
//! best kernel set the CPU supports; the scalar reference in [`crate::quant::int8`] is always
//! there, and every kernel is tested against it on awkward sizes with each set forced in turn.
//!
//! Two weight layouts: GGUF's rows (`x86_q32`, `x86_kquant`, `neon`), and the 16-row interleaved
//! groups of [`crate::quant::packed`] that the backend repacks weights into at load where the set
//! has kernels for it (`x86_packed`, `x86_packed_avx2`, `neon_packed`).
//!
//! `EDGELLM_CPU_KERNELS=scalar|avx2|avx512|neon` caps the set (for tests and for comparing).

/// The scalar reference, reachable as `super::int8` from the kernel files (the aarch64 test program
/// mounts the same files with `int8` at its root).
pub use crate::quant::int8;
/// The packed layout, reachable as `super::packed` from the kernel files (as `int8`).
pub use crate::quant::packed;

pub mod float;

#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neon_packed;
#[cfg(target_arch = "x86_64")]
pub mod x86_kquant;
#[cfg(target_arch = "x86_64")]
pub mod x86_packed;
#[cfg(target_arch = "x86_64")]
pub mod x86_packed_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_q32;

mod kinds;

pub use kinds::{DotRowsFn, GemmFn, KernelSet, PackedGemmFn, QuantizeFn};
use int8::{Q8Acts, Q8Row, WeightFormat, QK8};
use std::sync::OnceLock;

/// The set used by default: the richest available, capped by `EDGELLM_CPU_KERNELS`.
pub fn active() -> KernelSet {
    static ACTIVE: OnceLock<KernelSet> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let all = KernelSet::all_available();
        let best = *all.last().unwrap_or(&KernelSet::Scalar);
        match std::env::var("EDGELLM_CPU_KERNELS") {
            Ok(want) => all.iter().copied().find(|k| k.name() == want.trim()).unwrap_or(best),
            Err(_) => best,
        }
    })
}

fn select_dot(k: KernelSet, f: WeightFormat) -> Option<DotRowsFn> {
    if !k.available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(g) = x86_q32::dot_rows_fn(k, f).or_else(|| x86_kquant::dot_rows_fn(k, f)) {
            return Some(g);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(g) = neon::dot_rows_fn(k, f) {
            return Some(g);
        }
    }
    None
}

fn select_gemm(k: KernelSet, f: WeightFormat) -> Option<GemmFn> {
    if !k.available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(g) = x86_q32::gemm_fn(k, f).or_else(|| x86_kquant::gemm_fn(k, f)) {
            return Some(g);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(g) = neon::gemm_fn(k, f) {
            return Some(g);
        }
    }
    None
}

fn select_quantize(k: KernelSet) -> Option<QuantizeFn> {
    if !k.available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86_q32::quantize_fn(k)
    }
    #[cfg(target_arch = "aarch64")]
    {
        neon::quantize_fn(k)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

fn check_row(f: WeightFormat, row_bytes: usize, x: &Q8Row) {
    let n = x.qs.len();
    assert!(n.is_multiple_of(f.block_elems()) && row_bytes == n / f.block_elems() * f.block_bytes(), "int8 kernel: {f:?} row of {row_bytes} bytes for {n} activations");
    assert!(x.d.len() * QK8 == n && x.s.len() * QK8 == n && x.bsums.len() * 16 == n, "int8 kernel: activation parts");
}

/// Dot products of consecutive weight rows with one quantized activation row, with kernel set
/// `k` (falling back to the scalar reference where `k` has no kernel for `f`).
///
/// Panics if the lengths disagree (an internal error: the CPU backend checks shapes first).
pub fn dot_rows(k: KernelSet, f: WeightFormat, w: &[u8], x: &Q8Row, out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    let row_bytes = w.len() / out.len();
    assert_eq!(row_bytes * out.len(), w.len(), "int8 kernel: weight bytes");
    check_row(f, row_bytes, x);
    match select_dot(k, f) {
        // SAFETY: `select_dot` only returns kernels whose instruction set `k.available()` confirmed
        // on this CPU, and the lengths were checked above.
        Some(kernel) => unsafe { kernel(w, row_bytes, x, out) },
        None => int8::dot_rows(f, w, row_bytes, x, out),
    }
}

/// Matrix product of `n_rows` weight rows with every row of `xs`: `out[t * ldo + r]`.
///
/// Panics if the lengths disagree.
pub fn gemm(k: KernelSet, f: WeightFormat, w: &[u8], n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
    if n_rows == 0 || xs.rows == 0 {
        return;
    }
    let row_bytes = w.len() / n_rows;
    assert_eq!(row_bytes * n_rows, w.len(), "int8 gemm: weight bytes");
    assert!(ldo >= n_rows && out.len() >= (xs.rows - 1) * ldo + n_rows, "int8 gemm: output of {} for {}x{n_rows} (ldo {ldo})", out.len(), xs.rows);
    check_row(f, row_bytes, &xs.row(0));
    assert!(xs.qs.len() >= xs.rows * xs.cols, "int8 gemm: activations");
    match select_gemm(k, f) {
        // SAFETY: as in `dot_rows`; lengths checked above.
        Some(kernel) => unsafe { kernel(w, row_bytes, n_rows, xs, out, ldo) },
        None => int8::gemm(f, w, row_bytes, n_rows, xs, out, ldo),
    }
}

/// Quantizes every row of `x` (`rows * cols` values, `cols` a multiple of 32) into `out`.
///
/// Panics if `cols` is not a multiple of 32 or `x` is not `rows * cols` long.
pub fn quantize_rows(k: KernelSet, x: &[f32], rows: usize, cols: usize, out: &mut Q8Acts) {
    assert!(cols.is_multiple_of(QK8) && x.len() == rows * cols, "quantize_rows: {rows}x{cols} from {}", x.len());
    out.reshape(rows, cols);
    let kernel = select_quantize(k);
    for (i, xr) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        let (qs, d, s, bs) = out.row_parts_mut(i);
        match kernel {
            // SAFETY: the kernel's instruction set is available (checked by `select_quantize`)
            // and the slices were sized by `reshape`.
            Some(q) => unsafe { q(xr, qs, d, s, bs) },
            None => int8::quantize_row(xr, qs, d, s, bs),
        }
    }
}

/// Whether kernel set `k` has kernels for the row-interleaved layout of [`crate::quant::packed`]
/// (weights are repacked at load only for such a set).
pub fn has_packed_kernels(k: KernelSet, f: WeightFormat) -> bool {
    select_packed(k, f).is_some()
}

fn select_packed(k: KernelSet, f: WeightFormat) -> Option<PackedGemmFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if k == KernelSet::Avx512 && k.available() {
            return x86_packed::gemm_fn(f);
        }
        if k == KernelSet::Avx2 && k.available() {
            return x86_packed_avx2::gemm_fn(f);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if k == KernelSet::Neon && k.available() && neon::Dot::Sdot.available() {
            return neon_packed::gemm_fn(f);
        }
    }
    let _ = (k, f);
    None
}

/// Matrix product of packed weights (`groups`: the `ceil(n_rows / 16)` groups of a matrix of
/// format `f`, `xs.cols` wide) with every row of `xs`: `out[t * ldo + r]`. Falls back to the
/// scalar reference where `k` has no packed kernel.
///
/// Panics if the lengths disagree.
pub fn packed_gemm(k: KernelSet, f: WeightFormat, groups: &[u8], n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
    if n_rows == 0 || xs.rows == 0 {
        return;
    }
    let nb = xs.cols / QK8;
    assert!(packed::packable(f) && xs.cols.is_multiple_of(f.block_elems()), "packed gemm: {f:?} with {} columns", xs.cols);
    assert_eq!(groups.len(), n_rows.div_ceil(packed::GROUP_ROWS) * packed::group_bytes(f, xs.cols), "packed gemm: weight bytes");
    assert!(ldo >= n_rows && out.len() >= (xs.rows - 1) * ldo + n_rows, "packed gemm: output of {} for {}x{n_rows} (ldo {ldo})", out.len(), xs.rows);
    assert!(xs.qs.len() >= xs.rows * xs.cols && xs.d.len() >= xs.rows * nb && xs.s.len() >= xs.rows * nb && xs.bsums.len() >= xs.rows * 2 * nb, "packed gemm: activations");
    match select_packed(k, f) {
        // SAFETY: `select_packed` only returns kernels whose instruction set is available; the
        // lengths were checked above.
        Some(kernel) => unsafe { kernel(groups, n_rows, xs, out, ldo) },
        None => packed::gemm_reference(f, groups, n_rows, xs, out, ldo),
    }
}
