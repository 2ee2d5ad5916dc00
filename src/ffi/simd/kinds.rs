//! The kernel sets and kernel signatures, in plain Rust that rustc 1.63 accepts with no crates:
//! the aarch64 test program (tests/neon) mounts this file, `int8.rs` and `neon.rs` at its root.

use super::int8::{Q8Acts, Q8Row};

/// Instruction sets the CPU kernels come in, ordered from plainest to richest per architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelSet {
    /// Plain Rust (the reference).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI int8 dot products.
    Avx512,
    /// aarch64 NEON (with the `dotprod` SDOT instruction when the CPU has it).
    Neon,
}

impl KernelSet {
    /// Name used by `EDGELLM_CPU_KERNELS` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Scalar => "scalar",
            KernelSet::Avx2 => "avx2",
            KernelSet::Avx512 => "avx512",
            KernelSet::Neon => "neon",
        }
    }

    /// Whether this machine can run the set.
    pub fn available(self) -> bool {
        // Feature detection reads several CPUID-derived flags; kernels ask on every call, so the
        // answers are cached: bit 7 marks the cache filled, bit `set as u8` the set available.
        use std::sync::atomic::{AtomicU8, Ordering};
        static CACHE: AtomicU8 = AtomicU8::new(0);
        let mut bits = CACHE.load(Ordering::Relaxed);
        if bits == 0 {
            bits = 0x80;
            for (i, k) in [KernelSet::Scalar, KernelSet::Avx2, KernelSet::Avx512, KernelSet::Neon].iter().enumerate() {
                if k.detect() {
                    bits |= 1 << i;
                }
            }
            CACHE.store(bits, Ordering::Relaxed);
        }
        bits & (1 << (self as u8)) != 0
    }

    /// Asks the CPU whether it has this set's features (uncached).
    fn detect(self) -> bool {
        match self {
            KernelSet::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => {
                KernelSet::Avx2.detect()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            KernelSet::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every set this machine can run, plainest first.
    pub fn all_available() -> Vec<KernelSet> {
        [KernelSet::Scalar, KernelSet::Avx2, KernelSet::Avx512, KernelSet::Neon].iter().copied().filter(|k| k.available()).collect()
    }
}

/// Kernel signature: dot products of `out.len()` consecutive weight rows of `row_bytes` bytes
/// (`w.len() == out.len() * row_bytes`) with one quantized activation row.
///
/// # Safety
/// The CPU must support the kernel's instruction set; the lengths must be consistent (the safe
/// wrapper [`dot_rows`] checks both).
pub type DotRowsFn = unsafe fn(w: &[u8], row_bytes: usize, x: &Q8Row, out: &mut [f32]);

/// Kernel signature: `out[t * ldo + r] = dot(weight row r, activation row t)` for every weight row
/// `r < n_rows` in `w` and every activation row `t < xs.rows`.
///
/// # Safety
/// As [`DotRowsFn`]; the wrapper [`gemm`] checks `out` holds `(xs.rows - 1) * ldo + n_rows` values.
pub type GemmFn = unsafe fn(w: &[u8], row_bytes: usize, n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize);

/// Kernel signature of [`int8::quantize_row`].
///
/// # Safety
/// The CPU must support the kernel's instruction set; slices sized as `quantize_row` documents.
pub type QuantizeFn = unsafe fn(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], bsums: &mut [i16]);


/// Kernel signature of a packed matrix product: `groups` holds the row-interleaved groups
/// (`quant::packed`) of `n_rows` rows, `out[t * ldo + r]` gets row `r` against token `t` of `xs`.
///
/// # Safety
/// The CPU must support the kernel's instruction set.
pub type PackedGemmFn = unsafe fn(groups: &[u8], n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize);
