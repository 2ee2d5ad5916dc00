//! Build script. Without the `cuda` feature it does nothing (it reruns only when it changes
//! itself), so the CPU build pays nothing for the kernels. With `cuda` it compiles every
//! `kernels/*.cu` with nvcc to a cubin per shipped target and one PTX for JIT on anything newer,
//! in parallel, saves each ptxas report (`-Xptxas -v`) as `OUT_DIR/ptxas-<kernel>-<arch>.txt`
//! for `scripts/check_ptxas.py`, and writes `OUT_DIR/cuda_kernels.rs`, the table that
//! `src/backend/cuda/kernels.rs` embeds.
//!
//! nvcc is found through `NVCC`, then `CUDA_PATH`/bin, `CUDA_HOME`/bin, then `PATH`
//! (`scripts/install_nvcc.sh` installs the pinned one). Without it the crate builds CPU-only with
//! a cargo warning, or fails when `EDGELLM_REQUIRE_CUDA=1`. A kernel that does not compile fails
//! the build with nvcc's message.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

/// Cubin targets: Jetson Orin (sm_87), Hopper (sm_90), Jetson Thor (sm_110; CUDA 13 renamed
/// Thor's sm_101 to sm_110 and nvcc 13.0 no longer accepts sm_101).
const CUBIN_ARCHES: &[&str] = &["sm_87", "sm_90", "sm_110"];
/// PTX targets: the oldest shipped target, so any newer GPU's driver can JIT it.
const PTX_ARCHES: &[&str] = &["compute_87"];
/// The nvcc release the shipped images are pinned to (see scripts/install_nvcc.sh).
const PINNED_RELEASE: &str = "13.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        // CPU-only: kernel edits must not rebuild the crate.
        return;
    }
    // The directory, for kernels added or deleted; each source is listed too (kernel_sources).
    println!("cargo:rerun-if-changed=kernels");
    if let Err(msg) = build_kernels() {
        eprintln!("{msg}");
        std::process::exit(1);
    }
}

/// One nvcc invocation: a kernel source to one image.
struct Job {
    kernel: String,
    source: PathBuf,
    arch: &'static str,
    ptx: bool,
    out: PathBuf,
    report: PathBuf,
}

fn build_kernels() -> Result<(), String> {
    for var in ["NVCC", "CUDA_PATH", "CUDA_HOME", "PATH", "EDGELLM_REQUIRE_CUDA", "NVCC_CCBIN"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let kernels_dir = root.join("kernels");
    let sources = kernel_sources(&kernels_dir)?;
    let table = out_dir.join("cuda_kernels.rs");
    remove_old_images(&out_dir)?;

    let require = env::var("EDGELLM_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    let Some(nvcc) = find_nvcc()? else {
        if require {
            return Err("error: EDGELLM_REQUIRE_CUDA=1 but no nvcc found (set NVCC, CUDA_PATH or CUDA_HOME, \
                        or put nvcc on PATH; scripts/install_nvcc.sh installs the pinned one)"
                .into());
        }
        println!(
            "cargo:warning=feature `cuda` is on but no nvcc was found (NVCC, CUDA_PATH, CUDA_HOME, PATH): \
             building without CUDA kernels; scripts/install_nvcc.sh installs the pinned nvcc"
        );
        return write_table(&table, None, &[]);
    };
    let version = nvcc_version(&nvcc)?;
    if !version.contains(&format!("release {PINNED_RELEASE},")) {
        println!(
            "cargo:warning=nvcc at {} is not release {PINNED_RELEASE} ({version}); the pinned release is what \
             every CUDA 13 driver loads",
            nvcc.display()
        );
    }

    let mut jobs = Vec::new();
    for source in &sources {
        let kernel = source.file_stem().and_then(|s| s.to_str()).ok_or("kernel name is not UTF-8")?.to_string();
        let targets = CUBIN_ARCHES.iter().map(|a| (*a, false)).chain(PTX_ARCHES.iter().map(|a| (*a, true)));
        for (arch, ptx) in targets {
            let ext = if ptx { "ptx" } else { "cubin" };
            jobs.push(Job {
                out: out_dir.join(format!("{kernel}-{arch}.{ext}")),
                report: out_dir.join(format!("ptxas-{kernel}-{arch}.txt")),
                kernel: kernel.clone(),
                source: source.clone(),
                arch,
                ptx,
            });
        }
    }
    run_parallel(&nvcc, &kernels_dir, &jobs)?;
    write_table(&table, Some(&version), &jobs)
}

/// The `.cu` files directly under `kernels/` (sorted, so the table is reproducible); every
/// `.cu`/`.cuh` anywhere below it reruns the build when it changes.
fn kernel_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sources = Vec::new();
    if !dir.is_dir() {
        return Ok(sources);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| format!("reading {}: {e}", d.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("reading {}: {e}", d.display()))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("cu" | "cuh")) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            if ext == Some("cu") && d == dir {
                sources.push(path);
            }
        }
    }
    sources.sort();
    Ok(sources)
}

/// Deletes the images and reports of an earlier run, so that a deleted or renamed kernel leaves
/// no stale report for check_ptxas.py.
fn remove_old_images(out_dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(out_dir).map_err(|e| format!("reading {}: {e}", out_dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let image = name.ends_with(".cubin") || name.ends_with(".ptx");
        if image || (name.starts_with("ptxas-") && name.ends_with(".txt")) {
            fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// `NVCC`, then `CUDA_PATH`/bin/nvcc, `CUDA_HOME`/bin/nvcc, then the first nvcc on `PATH`. A set
/// `NVCC` that is not a file is an error, not a fallback: the user asked for that one.
fn find_nvcc() -> Result<Option<PathBuf>, String> {
    if let Some(p) = env::var_os("NVCC").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(Some(p)) } else { Err(format!("error: NVCC={} is not a file", p.display())) };
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(dir) = env::var_os(var).filter(|p| !p.is_empty()) {
            let p = Path::new(&dir).join("bin").join(exe("nvcc"));
            if p.is_file() {
                return Ok(Some(p));
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join(exe("nvcc"));
            if p.is_file() {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn exe(name: &str) -> String {
    format!("{name}{}", env::consts::EXE_SUFFIX)
}

/// The last line of `nvcc --version` that names the release, e.g.
/// `Cuda compilation tools, release 13.0, V13.0.88`.
fn nvcc_version(nvcc: &Path) -> Result<String, String> {
    let out = Command::new(nvcc).arg("--version").output().map_err(|e| format!("error: running {} --version: {e}", nvcc.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("release"))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| format!("error: {} --version printed no release line:\n{text}", nvcc.display()))
}

/// Runs the jobs on `NUM_JOBS` threads (cargo's `-j`); collects every failure, not just the first.
fn run_parallel(nvcc: &Path, include: &Path, jobs: &[Job]) -> Result<(), String> {
    let threads = env::var("NUM_JOBS").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(1).clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                if let Err(e) = compile(nvcc, include, job) {
                    errors.lock().unwrap_or_else(|p| p.into_inner()).push((i, job.kernel.as_str(), job.arch, e));
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if errors.is_empty() {
        return Ok(());
    }
    // A source error repeats for every target: nvcc's full message once per kernel file, then
    // one line for each further target that failed.
    errors.sort_by_key(|(i, ..)| *i);
    let mut shown = Vec::new();
    let mut msg = String::new();
    for (_, kernel, arch, e) in errors {
        if shown.contains(&kernel) {
            let _ = writeln!(msg, "error: kernels/{kernel}.cu also failed for {arch}");
        } else {
            shown.push(kernel);
            let _ = writeln!(msg, "{e}");
        }
    }
    Err(msg)
}

fn compile(nvcc: &Path, include: &Path, job: &Job) -> Result<(), String> {
    let mut cmd = Command::new(nvcc);
    cmd.arg(if job.ptx { "-ptx" } else { "-cubin" })
        .arg(format!("-arch={}", job.arch))
        .args(["-O3", "-lineinfo", "-std=c++17", "-Xptxas", "-v"])
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(&job.out)
        .arg(&job.source);
    let out = cmd.output().map_err(|e| format!("error: running {}: {e}", nvcc.display()))?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("error: nvcc failed on kernels/{}.cu for {} ({}):\n{cmd:?}\n{log}", job.kernel, job.arch, out.status));
    }
    if !job.ptx {
        fs::write(&job.report, &log).map_err(|e| format!("error: writing {}: {e}", job.report.display()))?;
    }
    Ok(())
}

/// Writes the Rust table of embedded images (empty when `version` is `None`: no nvcc).
fn write_table(path: &Path, version: Option<&str>, jobs: &[Job]) -> Result<(), String> {
    let mut s = String::from("// Generated by build.rs; do not edit.\n");
    let _ = writeln!(s, "/// The nvcc that compiled the images, `None` when the build found none.");
    let _ = writeln!(s, "pub const NVCC_VERSION: Option<&str> = {version:?};");
    let _ = writeln!(s, "/// Every embedded image, sorted by kernel then target.");
    let _ = writeln!(s, "pub static IMAGES: &[KernelImage] = &[");
    for job in jobs {
        let kind = if job.ptx { "ImageKind::Ptx" } else { "ImageKind::Cubin" };
        let _ = writeln!(
            s,
            "    KernelImage {{ kernel: {:?}, arch: {:?}, kind: {kind}, bytes: include_bytes!({:?}) }},",
            job.kernel,
            job.arch,
            job.out.display().to_string()
        );
    }
    s.push_str("];\n");
    fs::write(path, s).map_err(|e| format!("error: writing {}: {e}", path.display()))
}
