//! Build script. CUDA kernels in `kernels/` are compiled here once the CUDA backend lands (issue 5);
//! until then the crate is CPU-only and this only tells cargo when to rerun.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}
