//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! tripline links ONNX Runtime at run time (`ort`'s `load-dynamic`), so the same binary works
//! with the CPU build and the CUDA build (`onnxruntime-gpu`). The library is searched for, in
//! order:
//!
//! 1. `ORT_DYLIB_PATH` (a file; an error if it is set but unusable);
//! 2. the `capi` folder of the `onnxruntime` / `onnxruntime-gpu` Python package: in
//!    `$VIRTUAL_ENV`, in `.venv` of the current directory or any parent, then wherever the
//!    `python3` on `PATH` imports it from;
//! 3. `.ort/lib` of the current directory or any parent (where `scripts/install-onnxruntime.sh`
//!    puts it), `LD_LIBRARY_PATH`, `/usr/local/lib`, `/usr/lib` and the multiarch folders.
//!
//! When nothing is found, the error lists every place searched and how to install the library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{Error, Result};

/// The loaded library and its environment.
struct Loaded {
    env: Environment,
    path: PathBuf,
}

static ENV: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

/// File names of the ONNX Runtime library on this platform (prefixes; versioned names such as
/// `libonnxruntime.so.1.31.1` match too).
#[cfg(target_os = "linux")]
const LIB_PREFIX: &str = "libonnxruntime.so";
#[cfg(target_os = "macos")]
const LIB_PREFIX: &str = "libonnxruntime";
#[cfg(windows)]
const LIB_PREFIX: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
const LIB_PREFIX: &str = "libonnxruntime.so";

fn is_runtime_lib(name: &str) -> bool {
    if !name.starts_with(LIB_PREFIX) {
        return false;
    }
    // Not `libonnxruntime_providers_shared.so` and friends.
    let rest = &name[LIB_PREFIX.len()..];
    if cfg!(target_os = "macos") {
        rest.ends_with(".dylib") && !rest.starts_with('_')
    } else {
        rest.is_empty() || rest.starts_with('.')
    }
}

/// The runtime library inside `dir`, preferring the most specific (versioned) name.
fn lib_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_runtime_lib))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// `site-packages/onnxruntime/capi` folders under a virtual environment.
fn venv_capi_dirs(venv: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64", "Lib"] {
        let Ok(rd) = std::fs::read_dir(venv.join(lib)) else {
            continue;
        };
        let mut pys: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python"))
            })
            .collect();
        pys.sort();
        for py in pys {
            out.push(py.join("site-packages/onnxruntime/capi"));
        }
        if lib == "Lib" {
            out.push(venv.join("Lib/site-packages/onnxruntime/capi"));
        }
    }
    out
}

fn ancestors_with(name: &str) -> Vec<PathBuf> {
    let Ok(cwd) = std::env::current_dir() else {
        return Vec::new();
    };
    cwd.ancestors()
        .map(|a| a.join(name))
        .filter(|p| p.is_dir())
        .collect()
}

fn python_capi_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()).join("capi"))
}

/// Finds the ONNX Runtime library.
///
/// # Errors
/// A message listing every place searched and how to install the library, or naming
/// `ORT_DYLIB_PATH` when it is set to a path that is not a file.
pub fn locate_library() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH is set to `{}`, which is not a file; point it at \
                 libonnxruntime.so (or unset it to search the usual places)",
                p.display()
            ))
        };
    }
    let mut searched: Vec<String> = vec!["ORT_DYLIB_PATH (not set)".into()];
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        dirs.extend(venv_capi_dirs(Path::new(&v)));
    }
    for venv in ancestors_with(".venv") {
        dirs.extend(venv_capi_dirs(&venv));
    }
    for d in &dirs {
        if let Some(p) = lib_in(d) {
            return Ok(p);
        }
        searched.push(d.display().to_string());
    }
    match python_capi_dir() {
        Some(d) => {
            if let Some(p) = lib_in(&d) {
                return Ok(p);
            }
            searched.push(d.display().to_string());
        }
        None => searched.push("python3 -c 'import onnxruntime' (not importable)".into()),
    }
    let mut dirs: Vec<PathBuf> = ancestors_with(".ort")
        .into_iter()
        .map(|d| d.join("lib"))
        .collect();
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&ld));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/opt/homebrew/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for d in &dirs {
        if let Some(p) = lib_in(d) {
            return Ok(p);
        }
        searched.push(d.display().to_string());
    }
    Err(format!(
        "the ONNX Runtime library ({LIB_PREFIX}*) was not found; searched: {}. Install it with \
         `scripts/setup-python.sh` (project venv with the onnxruntime package) or \
         `scripts/install-onnxruntime.sh` (library only, into .ort/lib; `--gpu` for CUDA), \
         or set ORT_DYLIB_PATH to the library file",
        searched.join(", ")
    ))
}

fn load() -> std::result::Result<Loaded, String> {
    let path = locate_library()?;
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load ONNX Runtime from `{}`: {e} (tripline needs ONNX Runtime 1.31 or newer)",
            path.display()
        )
    })?;
    let env = builder
        .with_name("tripline")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from `{}`: {e}", path.display()))?;
    Ok(Loaded { env, path })
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
///
/// # Errors
/// [`Error::Other`] saying what was searched and how to install the library, or why loading
/// failed. The outcome of the first call is kept: later calls return the same error.
pub fn environment() -> Result<&'static Environment> {
    match ENV.get_or_init(load) {
        Ok(l) => Ok(&l.env),
        Err(e) => Err(Error::Other(e.clone())),
    }
}

/// The library file the environment was loaded from, once loaded.
pub fn library_path() -> Option<&'static Path> {
    match ENV.get() {
        Some(Ok(l)) => Some(&l.path),
        _ => None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn picks_the_runtime_library_not_the_provider_libraries() {
        assert!(is_runtime_lib("libonnxruntime.so"));
        assert!(is_runtime_lib("libonnxruntime.so.1.31.1"));
        assert!(!is_runtime_lib("libonnxruntime_providers_shared.so"));
        assert!(!is_runtime_lib("libonnxruntime_providers_cuda.so"));
        assert!(!is_runtime_lib("libonnxruntime.sox"));
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(
            lib_in(dir.path()).unwrap(),
            dir.path().join("libonnxruntime.so.1.31.1")
        );
    }
}
