//! x86-64 kernels for the k-quant formats (Q4_K, Q5_K, Q6_K), in AVX2 and AVX-512 VNNI variants.

use super::int8::WeightFormat;
use super::{DotRowsFn, GemmFn, KernelSet};

/// The matrix-vector kernel of `k` for `f`, if this file has one.
pub fn dot_rows_fn(_k: KernelSet, _f: WeightFormat) -> Option<DotRowsFn> {
    None
}

/// The matrix-matrix kernel of `k` for `f`, if this file has one.
pub fn gemm_fn(_k: KernelSet, _f: WeightFormat) -> Option<GemmFn> {
    None
}
