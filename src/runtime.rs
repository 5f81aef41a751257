//! Locating and loading the ONNX Runtime shared library, and the process-wide ORT environment.
//!
//! prodcat links ONNX Runtime dynamically (`ort`'s `load-dynamic`), so the library is a file on
//! disk that must be found before any session is built. The search order is:
//! 1. an explicit path (`--ort-lib` / `PRODCAT_ORT_LIB`),
//! 2. `ORT_DYLIB_PATH` (ort's own variable),
//! 3. `.deps/lib/libonnxruntime.so` in the working directory or any parent of it, or beside the
//!    executable (what `scripts/provision.sh` installs).
//!
//! A missing or too-old library becomes a clear [`Error::Runtime`] instead of ort's panic.

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
    let candidates: Vec<PathBuf> = roots.iter().map(|root| root.join(DEPS_DIR).join("lib").join(LIB_NAME)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Runtime(format!(
            "the ONNX Runtime library ({LIB_NAME}, version {ORT_VERSION}) was not found; run \
             `bash scripts/provision.sh` in the prodcat checkout, or set PRODCAT_ORT_LIB to its path \
             (looked in {})",
            candidates.first().map(|p| p.display().to_string()).unwrap_or_default()
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
