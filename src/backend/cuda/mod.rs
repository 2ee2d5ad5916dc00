//! CUDA backend (issue 5), compiled only with the `cuda` feature. So far it holds the kernel images
//! that build.rs compiles with nvcc and embeds; the device side (cudarc, launches, graphs) follows.

pub mod kernels;
