//! Locating and loading the ONNX Runtime shared library, and the process-wide ORT environment.
//!
//! prodcat links ONNX Runtime dynamically (`ort`'s `load-dynamic`), so the library is a file on
//! disk that must be found before any session is built. The search order is:
//! 1. an explicit path (`--ort-lib` / `PRODCAT_ORT_LIB`),
//! 2. `ORT_DYLIB_PATH` (ort's own variable),
//! 3. `.deps/lib-cuda/libonnxruntime.so` (the GPU build, `scripts/provision.sh gpu`; its CPU
//!    provider is the CPU build's), then `.deps/lib/libonnxruntime.so` (the CPU build,
//!    `scripts/provision.sh`), in the working directory or any parent of it, or beside the
//!    executable.
//!
//! A missing or too-old library becomes a clear [`Error::Runtime`] instead of ort's panic.
//!
//! The CUDA execution provider needs NVIDIA's CUDA 13 libraries (cuBLAS, cuFFT, cuRAND, NVRTC, the
//! CUDA runtime; cuDNN optional). Before a CUDA session, [`preload_cuda_libraries`] loads them from
//! `PRODCAT_CUDA_LIBS` (folders, `:`-separated), `.deps/cuda/lib` (`provision.sh gpu`), or the
//! `nvidia/cu13/lib` and `nvidia/cudnn/lib` folders of the active Python environment's NVIDIA
//! wheels (a CUDA image with PyTorch), else from the system's library path — as onnxruntime's
//! own `preload_dlls` does — so no one has to set `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{Error, Result};

/// The ONNX Runtime release prodcat is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// Folder (relative to the project root) where `scripts/provision.sh` puts native dependencies.
pub const DEPS_DIR: &str = ".deps";

const LIB_NAME: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// Finds `name` in `.deps/lib` of the working directory, its parents, or the executable's folders.
pub fn find_in_deps(name: &str) -> Option<PathBuf> {
    search_roots().into_iter().map(|root| root.join(DEPS_DIR).join("lib").join(name)).find(|p| p.is_file())
}

/// The GPU build of ONNX Runtime that `scripts/provision.sh gpu` installs, if it is there.
pub fn find_gpu_build() -> Option<PathBuf> {
    search_roots().into_iter().map(|root| root.join(DEPS_DIR).join("lib-cuda").join(LIB_NAME)).find(|p| p.is_file())
}

fn search_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    // The checkout this binary was built from (its target folder may live elsewhere).
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots
}

/// Finds the ONNX Runtime library; `explicit` wins over the environment and the search path.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return existing(path.to_path_buf(), "--ort-lib");
    }
    for var in ["PRODCAT_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return existing(PathBuf::from(value), var);
        }
    }
    let roots = search_roots();
    let candidates: Vec<PathBuf> = roots
        .iter()
        .flat_map(|root| ["lib-cuda", "lib"].map(|dir| root.join(DEPS_DIR).join(dir).join(LIB_NAME)))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Runtime(format!(
            "the ONNX Runtime library ({LIB_NAME}, version {ORT_VERSION}) was not found; run \
             `bash scripts/provision.sh` in the prodcat checkout, or set PRODCAT_ORT_LIB to its path \
             (looked in {})",
            candidates.get(1).map(|p| p.display().to_string()).unwrap_or_default()
        ))
    })
}

fn existing(path: PathBuf, source: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Runtime(format!(
            "{source} points to {}, which does not exist; it must name libonnxruntime.so \
             version {ORT_VERSION} (run `bash scripts/provision.sh` to install it)",
            path.display()
        )))
    }
}

/// Loads ONNX Runtime (once per process) and returns the shared environment.
///
/// Later calls return the same environment whatever `explicit` says.
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment> {
    let slot = ENVIRONMENT.get_or_init(|| {
        load(explicit).map_err(|e| match e {
            Error::Runtime(message) => message,
            other => other.to_string(),
        })
    });
    slot.as_ref().map_err(|message| Error::Runtime(message.clone()))
}

fn load(explicit: Option<&Path>) -> Result<Environment> {
    let path = locate_library(explicit)?;
    let builder = ort::init_from(&path).map_err(|e| {
        Error::Runtime(format!(
            "cannot use {} as ONNX Runtime {ORT_VERSION}: {e}; install the right version with \
             `bash scripts/provision.sh` or point PRODCAT_ORT_LIB at it",
            path.display()
        ))
    })?;
    let env = builder
        .with_name("prodcat")
        .build()
        .map_err(|e| Error::Runtime(format!("creating the ONNX Runtime environment from {}: {e}", path.display())))?;
    tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
    Ok(env)
}

/// NVIDIA libraries the CUDA execution provider of ONNX Runtime 1.31 (CUDA 13) loads, in
/// dependency order (cuBLASLt before cuBLAS), and whether a session can do without it.
const CUDA_LIBRARIES: [(&str, bool); 7] = [
    ("libcublasLt.so.13", true),
    ("libcublas.so.13", true),
    ("libnvrtc.so.13", false),
    ("libcurand.so.10", true),
    ("libcufft.so.12", false),
    ("libcudart.so.13", true),
    ("libcudnn.so.9", false),
];

static CUDA_PRELOAD: OnceLock<std::result::Result<Vec<String>, String>> = OnceLock::new();

/// Folders searched for NVIDIA's libraries, in order.
fn cuda_library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PRODCAT_CUDA_LIBS")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    dirs.extend(search_roots().into_iter().map(|root| root.join(DEPS_DIR).join("cuda").join("lib")));
    for site in python_site_packages() {
        dirs.extend(["cu13", "cudnn"].map(|pkg| site.join("nvidia").join(pkg).join("lib")));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

/// The active Python environment's site-packages (`VIRTUAL_ENV`, else `python3`'s), where
/// NVIDIA's pip wheels put their libraries.
fn python_site_packages() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV")
        && let Ok(entries) = std::fs::read_dir(Path::new(&venv).join("lib"))
    {
        out.extend(entries.flatten().map(|e| e.path().join("site-packages")));
    }
    let asked = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(o) = asked
        && o.status.success()
    {
        out.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    }
    out
}

/// Loads NVIDIA's CUDA libraries (once per process) so the CUDA execution provider finds them.
/// Returns where each came from, or the required ones that could not be loaded.
pub fn preload_cuda_libraries() -> std::result::Result<&'static [String], String> {
    let slot = CUDA_PRELOAD.get_or_init(|| {
        let dirs = cuda_library_dirs();
        let (mut loaded, mut missing) = (Vec::new(), Vec::new());
        for (name, required) in CUDA_LIBRARIES {
            let candidates = dirs.iter().map(|d| d.join(name)).filter(|p| p.is_file()).chain([PathBuf::from(name)]);
            let mut found = None;
            for path in candidates {
                // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's
                // CUDA libraries, loaded exactly as ONNX Runtime would load them itself.
                #[allow(unsafe_code)]
                let opened = unsafe { libloading::Library::new(&path) };
                if let Ok(lib) = opened {
                    // Kept for the life of the process: the provider binds to them by soname.
                    std::mem::forget(lib);
                    found = Some(path);
                    break;
                }
            }
            match found {
                Some(path) => loaded.push(path.display().to_string()),
                None if required => missing.push(name.to_string()),
                None => tracing::debug!(library = name, "optional CUDA library not found"),
            }
        }
        if missing.is_empty() {
            tracing::info!(libraries = ?loaded, "CUDA libraries loaded");
            Ok(loaded)
        } else {
            Err(format!(
                "NVIDIA's CUDA 13 libraries were not found ({}; looked in {} and the system library \
                 path): run `bash scripts/provision.sh gpu` or set PRODCAT_CUDA_LIBS",
                missing.join(", "),
                if dirs.is_empty() {
                    "PRODCAT_CUDA_LIBS, .deps/cuda/lib, the Python environment's nvidia/cu13/lib".to_string()
                } else {
                    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                }
            ))
        }
    });
    slot.as_ref().map(Vec::as_slice).map_err(Clone::clone)
}
