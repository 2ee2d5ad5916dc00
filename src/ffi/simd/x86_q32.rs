//! x86-64 kernels for the 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the
//! activation quantizer, in AVX2 and AVX-512 VNNI variants.

use super::int8::WeightFormat;
use super::{DotRowsFn, GemmFn, KernelSet, QuantizeFn};

/// The matrix-vector kernel of `k` for `f`, if this file has one.
pub fn dot_rows_fn(_k: KernelSet, _f: WeightFormat) -> Option<DotRowsFn> {
    None
}

/// The matrix-matrix kernel of `k` for `f`, if this file has one.
pub fn gemm_fn(_k: KernelSet, _f: WeightFormat) -> Option<GemmFn> {
    None
}

/// The activation quantizer of `k`, if this file has one.
pub fn quantize_fn(_k: KernelSet) -> Option<QuantizeFn> {
    None
}
