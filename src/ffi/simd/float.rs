//! Float kernels of attention and the KV cache: dot products and scaled additions of f32 rows
//! with f32 or f16 rows, and f32→f16 conversion. The AVX2 + F16C variants (used by both x86 sets)
//! convert eight halves per instruction; the scalar versions are the reference they are tested
//! against, and serve every other CPU.

use super::KernelSet;

/// Converts f32 values to IEEE half bits (round to nearest even), `src.len() == dst.len()`.
pub fn f32_to_f16(k: KernelSet, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: AVX2/F16C availability checked on the line above; lengths checked.
        unsafe { x86::f32_to_f16(src, dst) };
        return;
    }
    let _ = k;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(*s).to_bits();
    }
}

/// Converts IEEE half bits to f32, `src.len() == dst.len()`.
pub fn f16_to_f32(k: KernelSet, src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: as in `f32_to_f16`.
        unsafe { x86::f16_to_f32(src, dst) };
        return;
    }
    let _ = k;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = super::int8::f16_to_f32(*s);
    }
}

/// `Σ q[i] * k[i]` with `k` in f16 bits; equal lengths.
pub fn dot_f16(k: KernelSet, q: &[f32], kv: &[u16]) -> f32 {
    assert_eq!(q.len(), kv.len(), "dot_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: as in `f32_to_f16`.
        return unsafe { x86::dot_f16(q, kv) };
    }
    let _ = k;
    let mut acc = [0f32; 8];
    for (i, (a, b)) in q.iter().zip(kv).enumerate() {
        acc[i % 8] += a * super::int8::f16_to_f32(*b);
    }
    acc.iter().sum()
}

/// `out[j] = Σ q[i] * rows[j * stride + i]` for `j < out.len()`, rows in f16 bits: one query
/// against many cached keys (decode attention). The x86 kernel takes four keys at a time and
/// sums their lanes together.
///
/// Panics if `rows` is too short or `stride < q.len()`.
pub fn dot_f16_rows(k: KernelSet, q: &[f32], rows: &[u16], stride: usize, out: &mut [f32]) {
    let hd = q.len();
    if out.is_empty() {
        return;
    }
    assert!(stride >= hd && rows.len() >= (out.len() - 1) * stride + hd, "dot_f16_rows lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() && hd.is_multiple_of(8) {
        // SAFETY: AVX2/F16C availability checked here; lengths checked above.
        unsafe { x86::dot_f16_rows(q, rows, stride, out) };
        return;
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_f16(k, q, &rows[j * stride..j * stride + hd]);
    }
}

/// `out[i] = Σ_j w[j] * rows[j * stride + i]`, rows in f16 bits (the weighted values of decode
/// attention); `out` is overwritten. The x86 kernel keeps up to 64 outputs in registers while it
/// walks the rows.
///
/// Panics if `rows` is too short or `stride < out.len()`.
pub fn weighted_sum_f16(k: KernelSet, w: &[f32], rows: &[u16], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    weighted_sum_f16_add(k, w, rows, stride, out);
}

/// `out[i] += Σ_j w[j] * rows[j * stride + i]`, rows in f16 bits: [`weighted_sum_f16`] over one
/// run of rows (one KV block) added to what earlier runs left in `out`.
///
/// Panics if `rows` is too short or `stride < out.len()`.
pub fn weighted_sum_f16_add(k: KernelSet, w: &[f32], rows: &[u16], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    if w.is_empty() {
        return;
    }
    assert!(stride >= hd && rows.len() >= (w.len() - 1) * stride + hd, "weighted_sum_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() && hd.is_multiple_of(8) {
        // SAFETY: AVX2/F16C availability checked here; lengths checked above.
        unsafe { x86::weighted_sum_f16_add(w, rows, stride, out) };
        return;
    }
    for (j, &wj) in w.iter().enumerate() {
        axpy_f16(k, out, wj, &rows[j * stride..j * stride + hd]);
    }
}

/// `acc[i] += a * v[i]` with `v` in f16 bits; equal lengths.
pub fn axpy_f16(k: KernelSet, acc: &mut [f32], a: f32, v: &[u16]) {
    assert_eq!(acc.len(), v.len(), "axpy_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: as in `f32_to_f16`.
        unsafe { x86::axpy_f16(acc, a, v) };
        return;
    }
    let _ = k;
    for (o, b) in acc.iter_mut().zip(v) {
        *o += a * super::int8::f16_to_f32(*b);
    }
}

/// `Σ x[i] * y[i]` in f32; equal lengths.
pub fn dot_f32(k: KernelSet, x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot_f32 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: as in `f32_to_f16`.
        return unsafe { x86::dot_f32(x, y) };
    }
    let _ = k;
    crate::quant::dot_f32(x, y)
}

/// `acc[i] += a * v[i]` in f32; equal lengths.
pub fn axpy_f32(k: KernelSet, acc: &mut [f32], a: f32, v: &[f32]) {
    assert_eq!(acc.len(), v.len(), "axpy_f32 lengths");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: as in `f32_to_f16`.
        unsafe { x86::axpy_f32(acc, a, v) };
        return;
    }
    let _ = k;
    for (o, b) in acc.iter_mut().zip(v) {
        *o += a * b;
    }
}

/// Shape of a row-major product `C[m x n] += A[m x k] · B[k x n]` with leading dimensions.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Row stride of A.
    pub lda: usize,
    /// Row stride of B.
    pub ldb: usize,
    /// Row stride of C.
    pub ldc: usize,
}

/// `C += A · B` in f32 (all row-major): attention's scores (queries times transposed keys) and
/// its weighted values. The x86 kernel keeps a 4 x 16 tile of C in registers, so each loaded
/// value of B serves four rows of A.
///
/// Panics if a slice is too short for the shape.
pub fn gemm_f32(k: KernelSet, g: GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let GemmShape { m, n, k: kd, lda, ldb, ldc } = g;
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= kd && ldb >= n && ldc >= n, "gemm_f32 strides");
    assert!(a.len() >= (m - 1) * lda + kd && c.len() >= (m - 1) * ldc + n, "gemm_f32 A/C lengths");
    assert!(kd == 0 || b.len() >= (kd - 1) * ldb + n, "gemm_f32 B length");
    #[cfg(target_arch = "x86_64")]
    if k >= KernelSet::Avx2 && k.available() {
        // SAFETY: AVX2/FMA availability checked here; slice lengths checked above.
        unsafe { x86::gemm_f32(g, a, b, c) };
        return;
    }
    let _ = k;
    gemm_f32_scalar(g, a, b, c, 0..m, 0..n);
}

/// Scalar `C += A · B` over the rows and columns given.
fn gemm_f32_scalar(g: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
    for i in rows {
        for p in 0..g.k {
            let av = a[i * g.lda + p];
            let brow = &b[p * g.ldb..];
            let crow = &mut c[i * g.ldc..];
            for j in cols.clone() {
                crow[j] += av * brow[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [u16]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices.
            let v = unsafe { _mm256_loadu_ps(src.as_ptr().add(i)) };
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h) };
        }
        for i in n..src.len() {
            dst[i] = half::f16::from_f32(src[i]).to_bits();
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for i in n..src.len() {
            dst[i] = super::super::int8::f16_to_f32(src[i]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(q: &[f32], k: &[u16]) -> f32 {
        let n = q.len() / 16 * 16;
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= len of both slices.
            let (k0, k1, q0, q1) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i).cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i + 8).cast())),
                    _mm256_loadu_ps(q.as_ptr().add(i)),
                    _mm256_loadu_ps(q.as_ptr().add(i + 8)),
                )
            };
            a0 = _mm256_fmadd_ps(q0, k0, a0);
            a1 = _mm256_fmadd_ps(q1, k1, a1);
        }
        let mut s = hsum256(_mm256_add_ps(a0, a1));
        for i in n..q.len() {
            s += q[i] * super::super::int8::f16_to_f32(k[i]);
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(acc: &mut [f32], a: f32, v: &[u16]) {
        let n = acc.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices.
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
                let o = _mm256_loadu_ps(acc.as_ptr().add(i));
                _mm256_storeu_ps(acc.as_mut_ptr().add(i), _mm256_fmadd_ps(av, x, o));
            }
        }
        for i in n..acc.len() {
            acc[i] += a * super::super::int8::f16_to_f32(v[i]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_rows(q: &[f32], rows: &[u16], stride: usize, out: &mut [f32]) {
        let hd = q.len();
        let n = out.len();
        let n4 = n / 4 * 4;
        let row = |j: usize, i: usize| -> __m256 {
            // SAFETY: j < n and i + 8 <= hd, so the 8 halves lie inside `rows` (checked by the
            // caller: rows.len() >= (n - 1) * stride + hd).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(rows.as_ptr().add(j * stride + i).cast())) }
        };
        for j in (0..n4).step_by(4) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..hd).step_by(8) {
                // SAFETY: i + 8 <= hd = q.len().
                let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(i)) };
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, row(j + r, i), *a);
                }
            }
            // Lanes of the four sums side by side, then the two 128-bit halves added.
            let h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            // SAFETY: j + 4 <= n = out.len().
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add(j), s) };
        }
        for (j, o) in out.iter_mut().enumerate().skip(n4) {
            let mut acc = _mm256_setzero_ps();
            for i in (0..hd).step_by(8) {
                // SAFETY: i + 8 <= hd = q.len().
                let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(i)) };
                acc = _mm256_fmadd_ps(qv, row(j, i), acc);
            }
            *o = hsum256(acc);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_f16_add(w: &[f32], rows: &[u16], stride: usize, out: &mut [f32]) {
        let hd = out.len();
        for c0 in (0..hd).step_by(64) {
            let width = (hd - c0).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            for (c, a) in acc.iter_mut().enumerate().take(width) {
                // SAFETY: c0 + 8c + 8 <= hd = out.len().
                *a = unsafe { _mm256_loadu_ps(out.as_ptr().add(c0 + 8 * c)) };
            }
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wj);
                for (c, a) in acc.iter_mut().enumerate().take(width) {
                    // SAFETY: j < w.len() and c0 + 8c + 8 <= hd, inside `rows` (checked by the
                    // caller: rows.len() >= (w.len() - 1) * stride + hd).
                    let v = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(rows.as_ptr().add(j * stride + c0 + 8 * c).cast())) };
                    *a = _mm256_fmadd_ps(wv, v, *a);
                }
            }
            for (c, a) in acc.iter().enumerate().take(width) {
                // SAFETY: c0 + 8c + 8 <= hd = out.len().
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * c), *a) };
            }
        }
    }

    /// `C += A · B` with 4 x 16 register tiles; edges go to the scalar loop.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn gemm_f32(g: super::GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m4, n16) = (g.m / 4 * 4, g.n / 16 * 16);
        for i0 in (0..m4).step_by(4) {
            for j0 in (0..n16).step_by(16) {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for p in 0..g.k {
                    // SAFETY: p < k and j0 + 16 <= n, so both loads lie inside B (checked by
                    // the caller: b.len() >= (k - 1) * ldb + n).
                    let (b0, b1) = unsafe {
                        let bp = b.as_ptr().add(p * g.ldb + j0);
                        (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
                    };
                    for (r, row) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(a[(i0 + r) * g.lda + p]);
                        row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                        row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    // SAFETY: i0 + r < m and j0 + 16 <= n lie inside C (checked by the caller).
                    unsafe {
                        let cp = c.as_mut_ptr().add((i0 + r) * g.ldc + j0);
                        _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), row[0]));
                        _mm256_storeu_ps(cp.add(8), _mm256_add_ps(_mm256_loadu_ps(cp.add(8)), row[1]));
                    }
                }
            }
        }
        // SAFETY: same features; `m4 <= m` and `n16 <= n` keep the edges inside the shape.
        unsafe { gemm_f32_edges(g, a, b, c, m4, n16) };
    }

    /// The edges of [`gemm_f32`] (rows `m4..m`, then columns `n16..n` of every row) with the
    /// tiles' arithmetic: per element an f32 accumulator from zero, one fused multiply-add per
    /// step of `k` in order, added to C at the end. An element's value then does not depend on
    /// whether it fell in a tile, so a query row's attention is the same in any prefill chunk,
    /// which batching and prefix reuse rely on (`tests/cpu_batch_invariance.rs`).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gemm_f32_edges(g: super::GemmShape, a: &[f32], b: &[f32], c: &mut [f32], m4: usize, n16: usize) {
        for i in m4..g.m {
            for j0 in (0..n16).step_by(16) {
                let mut acc = [_mm256_setzero_ps(); 2];
                for p in 0..g.k {
                    let av = _mm256_set1_ps(a[i * g.lda + p]);
                    // SAFETY: p < k and j0 + 16 <= n16 <= n lie inside B (checked by the caller).
                    let (b0, b1) = unsafe {
                        let bp = b.as_ptr().add(p * g.ldb + j0);
                        (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
                    };
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
                // SAFETY: i < m and j0 + 16 <= n lie inside C (checked by the caller).
                unsafe {
                    let cp = c.as_mut_ptr().add(i * g.ldc + j0);
                    _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), acc[0]));
                    _mm256_storeu_ps(cp.add(8), _mm256_add_ps(_mm256_loadu_ps(cp.add(8)), acc[1]));
                }
            }
        }
        if n16 == g.n {
            return;
        }
        let w = g.n - n16;
        for i in 0..g.m {
            let mut acc = [0f32; 16];
            for p in 0..g.k {
                let av = a[i * g.lda + p];
                let brow = &b[p * g.ldb + n16..p * g.ldb + g.n];
                for (x, &bv) in acc[..w].iter_mut().zip(brow) {
                    *x = av.mul_add(bv, *x);
                }
            }
            for (cv, x) in c[i * g.ldc + n16..i * g.ldc + g.n].iter_mut().zip(acc) {
                *cv += x;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
        let n = x.len() / 16 * 16;
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= len of both slices.
            unsafe {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(y.as_ptr().add(i)), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8)), _mm256_loadu_ps(y.as_ptr().add(i + 8)), a1);
            }
        }
        let mut s = hsum256(_mm256_add_ps(a0, a1));
        for i in n..x.len() {
            s += x[i] * y[i];
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f32(acc: &mut [f32], a: f32, v: &[f32]) {
        let n = acc.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices.
            unsafe {
                let o = _mm256_loadu_ps(acc.as_ptr().add(i));
                let x = _mm256_loadu_ps(v.as_ptr().add(i));
                _mm256_storeu_ps(acc.as_mut_ptr().add(i), _mm256_fmadd_ps(av, x, o));
            }
        }
        for i in n..acc.len() {
            acc[i] += a * v[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift source of uniform values in [-1, 1).
    fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Reordered f32 sums of `n` terms differ by at most about n·ε·Σ|terms|.
    fn tol(n: usize, mag: f32) -> f32 {
        n as f32 * f32::EPSILON * mag + 1e-6
    }

    #[test]
    fn multi_row_f16_kernels_match_the_single_row_ones() {
        let mut next = uniform(0x7777_u64);
        for k in KernelSet::all_available() {
            for (hd, n, stride) in [(8usize, 1usize, 8usize), (64, 7, 192), (64, 13, 64), (256, 5, 256), (24, 9, 40), (72, 4, 80), (7, 3, 9)] {
                let q: Vec<f32> = (0..hd).map(|_| next()).collect();
                let w: Vec<f32> = (0..n).map(|_| next()).collect();
                let src: Vec<f32> = (0..(n - 1) * stride + hd).map(|_| next()).collect();
                let mut rows = vec![0u16; src.len()];
                f32_to_f16(KernelSet::Scalar, &src, &mut rows);
                let mut got = vec![0f32; n];
                dot_f16_rows(k, &q, &rows, stride, &mut got);
                for j in 0..n {
                    let want = dot_f16(KernelSet::Scalar, &q, &rows[j * stride..j * stride + hd]);
                    assert!((got[j] - want).abs() <= tol(hd, hd as f32), "{k:?} dot_f16_rows hd {hd} row {j}");
                }
                let mut sum = vec![9f32; hd];
                weighted_sum_f16(k, &w, &rows, stride, &mut sum);
                let mut want = vec![0f32; hd];
                for j in 0..n {
                    axpy_f16(KernelSet::Scalar, &mut want, w[j], &rows[j * stride..j * stride + hd]);
                }
                for i in 0..hd {
                    assert!((sum[i] - want[i]).abs() <= tol(n, n as f32), "{k:?} weighted_sum_f16 hd {hd} col {i}");
                }
            }
        }
    }

    #[test]
    fn gemm_f32_matches_the_scalar_loop_on_awkward_shapes() {
        let mut next = uniform(0xABCD_u64);
        for k in KernelSet::all_available() {
            for (m, n, kd) in [(1usize, 1usize, 1usize), (4, 16, 64), (5, 17, 3), (16, 40, 64), (7, 33, 256), (3, 15, 8)] {
                let g = GemmShape { m, n, k: kd, lda: kd + 1, ldb: n + 2, ldc: n + 3 };
                let a: Vec<f32> = (0..m * g.lda).map(|_| next()).collect();
                let b: Vec<f32> = (0..kd * g.ldb).map(|_| next()).collect();
                let c0: Vec<f32> = (0..m * g.ldc).map(|_| next()).collect();
                let (mut c, mut want) = (c0.clone(), c0.clone());
                gemm_f32(k, g, &a, &b, &mut c);
                gemm_f32_scalar(g, &a, &b, &mut want, 0..m, 0..n);
                for i in 0..m {
                    for j in 0..g.ldc {
                        let (x, y) = (c[i * g.ldc + j], want[i * g.ldc + j]);
                        if j >= n {
                            assert_eq!(x, c0[i * g.ldc + j], "{k:?} wrote outside C at ({i},{j})");
                        }
                        assert!((x - y).abs() <= tol(kd, kd as f32 + 1.0), "{k:?} {m}x{n}x{kd} ({i},{j}): {x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_set_matches_the_scalar_float_kernels_on_awkward_lengths() {
        let mut next = uniform(0x1234_5678_u64);
        for k in KernelSet::all_available() {
            for n in [1usize, 7, 8, 15, 16, 17, 64, 100, 256] {
                let x: Vec<f32> = (0..n).map(|_| next()).collect();
                let y: Vec<f32> = (0..n).map(|_| next()).collect();
                let mut h = vec![0u16; n];
                let mut h_ref = vec![0u16; n];
                f32_to_f16(k, &y, &mut h);
                f32_to_f16(KernelSet::Scalar, &y, &mut h_ref);
                assert_eq!(h, h_ref, "{k:?} f16 conversion n={n}");
                let mut back = vec![0f32; n];
                let mut back_ref = vec![0f32; n];
                f16_to_f32(k, &h, &mut back);
                f16_to_f32(KernelSet::Scalar, &h, &mut back_ref);
                assert_eq!(back, back_ref, "{k:?} f16 to f32 n={n}");
                let mag: f32 = x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum();
                let (a, b) = (dot_f16(k, &x, &h), dot_f16(KernelSet::Scalar, &x, &h));
                assert!((a - b).abs() <= tol(n, mag), "{k:?} dot_f16 n={n}: {a} vs {b}");
                let (a, b) = (dot_f32(k, &x, &y), dot_f32(KernelSet::Scalar, &x, &y));
                assert!((a - b).abs() <= tol(n, mag), "{k:?} dot_f32 n={n}: {a} vs {b}");
                let mut acc = x.clone();
                let mut acc_ref = x.clone();
                axpy_f16(k, &mut acc, 0.37, &h);
                axpy_f16(KernelSet::Scalar, &mut acc_ref, 0.37, &h);
                for (p, q) in acc.iter().zip(&acc_ref) {
                    assert!((p - q).abs() <= 1e-6, "{k:?} axpy_f16 n={n}");
                }
                let mut acc = x.clone();
                let mut acc_ref = x.clone();
                axpy_f32(k, &mut acc, -1.5, &y);
                axpy_f32(KernelSet::Scalar, &mut acc_ref, -1.5, &y);
                for (p, q) in acc.iter().zip(&acc_ref) {
                    assert!((p - q).abs() <= 1e-6, "{k:?} axpy_f32 n={n}");
                }
            }
        }
    }
}
