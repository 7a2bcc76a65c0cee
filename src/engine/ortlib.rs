//! Finding and loading ONNX Runtime's shared library, and the one ORT environment per process.
//!
//! Resolution order: an explicit path in the runtime configuration, then `ORT_DYLIB_PATH`, then the
//! location `make setup` installs it to (`<project>/.ort/libonnxruntime.so`, next to the executable's
//! `lib/` folder, or the project's Python venv). When none loads, the error names every path tried and
//! the command that installs the library. Nothing here panics.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// File name of the library on this platform.
#[cfg(target_os = "windows")]
const LIB_NAME: &str = "onnxruntime.dll";
#[cfg(target_os = "macos")]
const LIB_NAME: &str = "libonnxruntime.dylib";
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
const LIB_NAME: &str = "libonnxruntime.so";

/// The command a user runs to install the library where Attune looks for it.
pub const INSTALL_HINT: &str = "run `make setup` in the Attune checkout (it installs onnxruntime==1.32.0 from PyPI into .ort/), or set ORT_DYLIB_PATH to a libonnxruntime.so of version >= 1.31";

static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Candidate library paths in resolution order, each with where it came from.
pub fn candidate_paths(explicit: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push((p.to_path_buf(), "configuration `ort_library`"));
        // An explicit path is a promise: do not silently use another library.
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        if !p.is_empty() {
            out.push((PathBuf::from(p), "ORT_DYLIB_PATH"));
        }
    }
    out.push((default_install_dir().join(LIB_NAME), "make setup"));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push((dir.join("lib").join(LIB_NAME), "next to the executable"));
    }
    out
}

/// Where `make setup` puts the library: `.ort/` at the project root.
pub fn default_install_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ort")
}

/// Loads ONNX Runtime (once per process) and returns the process-wide environment.
///
/// A second call returns the environment of the first; the library cannot be swapped once loaded.
pub fn environment(explicit: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let mut tried = Vec::new();
    let mut builder = None;
    for (path, source) in candidate_paths(explicit) {
        if !path.exists() {
            tried.push(format!("{} ({source}): not found", path.display()));
            continue;
        }
        // `init_from` returns an error (never panics) for a missing file, a library without the ORT API
        // or a version older than the API level ort was built for.
        match ort::init_from(&path) {
            Ok(b) => {
                log::info!("ONNX Runtime loaded from {} ({source})", path.display());
                builder = Some(b);
                break;
            }
            Err(e) => tried.push(format!("{} ({source}): {e}", path.display())),
        }
    }
    let Some(builder) = builder else {
        return Err(Error::OrtLibrary(format!("tried {}; {INSTALL_HINT}", tried.join("; "))));
    };
    let env = builder.with_name("attune").with_telemetry(false).build()?;
    Ok(ENV.get_or_init(|| env))
}

/// ONNX Runtime's build description (version, commit) once the library is loaded.
pub fn build_info() -> Option<&'static str> {
    ENV.get().map(|_| ort::info())
}
