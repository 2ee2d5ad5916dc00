//! The CUDA kernel images embedded at build time: for every `kernels/<name>.cu`, a cubin per
//! shipped target (sm_87 Orin, sm_90 Hopper, sm_110 Thor) and PTX for compute_87 that the driver
//! JITs on any newer GPU. build.rs writes the table (`OUT_DIR/cuda_kernels.rs`); it is empty when
//! the build found no nvcc, which [`NVCC_VERSION`] being `None` tells apart from "no kernels".

/// What an image holds, which decides how the driver loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Machine code for exactly one architecture family (`sm_XY`).
    Cubin,
    /// PTX text (not NUL-terminated) for `compute_XY` and newer, compiled by the driver at load.
    Ptx,
}

/// One compiled kernel file for one target.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage {
    /// Kernel file stem: `rmsnorm` for `kernels/rmsnorm.cu`.
    pub kernel: &'static str,
    /// Target name as nvcc spells it: `sm_90` for a cubin, `compute_87` for PTX.
    pub arch: &'static str,
    /// Cubin or PTX.
    pub kind: ImageKind,
    /// The image bytes.
    pub bytes: &'static [u8],
}

impl KernelImage {
    /// The compute capability the image targets as `(major, minor)`: `sm_87` -> `(8, 7)`,
    /// `sm_110` -> `(11, 0)` (the last digit is the minor).
    pub fn capability(&self) -> Option<(u32, u32)> {
        let digits = self.arch.strip_prefix("sm_").or_else(|| self.arch.strip_prefix("compute_"))?;
        parse_capability(digits)
    }
}

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

/// Every embedded image.
pub fn images() -> &'static [KernelImage] {
    IMAGES
}

/// The image of `kernel` to load on a device of compute capability `major.minor`: its own cubin,
/// else a cubin of the same major and a lower minor (binary compatible), else PTX for the newest
/// capability not above the device's. `None` when nothing can run there.
pub fn for_device(kernel: &str, major: u32, minor: u32) -> Option<&'static KernelImage> {
    let ofkernel = || IMAGES.iter().filter(move |i| i.kernel == kernel);
    let cubin = ofkernel()
        .filter(|i| i.kind == ImageKind::Cubin)
        .filter_map(|i| i.capability().map(|c| (c, i)))
        .filter(|((ma, mi), _)| *ma == major && *mi <= minor)
        .max_by_key(|(c, _)| *c)
        .map(|(_, i)| i);
    cubin.or_else(|| {
        ofkernel()
            .filter(|i| i.kind == ImageKind::Ptx)
            .filter_map(|i| i.capability().map(|c| (c, i)))
            .filter(|(c, _)| *c <= (major, minor))
            .max_by_key(|(c, _)| *c)
            .map(|(_, i)| i)
    })
}

fn parse_capability(digits: &str) -> Option<(u32, u32)> {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_parse_as_nvcc_spells_them() {
        assert_eq!(parse_capability("87"), Some((8, 7)));
        assert_eq!(parse_capability("110"), Some((11, 0)));
        assert_eq!(parse_capability("9"), None);
        assert_eq!(parse_capability("9a"), None);
    }

    #[test]
    fn every_kernel_has_every_target_when_nvcc_ran() {
        if NVCC_VERSION.is_none() {
            eprintln!("skipped: built without nvcc, no kernel images embedded");
            return;
        }
        let kernels: std::collections::BTreeSet<_> = IMAGES.iter().map(|i| i.kernel).collect();
        assert!(kernels.contains("rmsnorm"), "kernels/rmsnorm.cu was not embedded: {kernels:?}");
        for k in kernels {
            for arch in ["sm_87", "sm_90", "sm_110", "compute_87"] {
                let img = IMAGES.iter().find(|i| i.kernel == k && i.arch == arch);
                let img = img.unwrap_or_else(|| panic!("{k} has no {arch} image"));
                assert!(!img.bytes.is_empty(), "{k} {arch} is empty");
                match img.kind {
                    // ELF magic: the driver rejects anything else as a cubin.
                    ImageKind::Cubin => assert_eq!(&img.bytes[..4], b"\x7fELF", "{k} {arch}"),
                    ImageKind::Ptx => {
                        let text = std::str::from_utf8(img.bytes).expect("PTX is text");
                        assert!(text.contains(".target sm_87"), "{k} {arch} PTX targets something else");
                    }
                }
            }
        }
    }

    #[test]
    fn devices_get_their_cubin_a_compatible_one_or_ptx() {
        if NVCC_VERSION.is_none() {
            eprintln!("skipped: built without nvcc, no kernel images embedded");
            return;
        }
        let arch = |ma, mi| for_device("rmsnorm", ma, mi).map(|i| i.arch);
        assert_eq!(arch(8, 7), Some("sm_87"));
        assert_eq!(arch(8, 9), Some("sm_87"), "sm_87 cubins run on 8.9");
        assert_eq!(arch(9, 0), Some("sm_90"));
        assert_eq!(arch(11, 0), Some("sm_110"));
        assert_eq!(arch(12, 0), Some("compute_87"), "Blackwell consumer parts JIT the PTX");
        assert_eq!(arch(8, 6), None, "nothing we ship runs below 8.7");
        assert_eq!(for_device("no_such_kernel", 9, 0).map(|i| i.arch), None);
    }
}
