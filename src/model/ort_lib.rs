//! Finding the ONNX Runtime shared library: `--ort-lib PATH`, else
//! `ORT_DYLIB_PATH`, else the library inside an installed Python
//! `onnxruntime` package (the PyPI wheel ships
//! `onnxruntime/capi/libonnxruntime.so.<version>`), looked up through the
//! active virtualenv's python and the `python3` on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the library was found, for messages and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibrary {
    /// Path of the shared library.
    pub path: PathBuf,
    /// How it was found (`--ort-lib`, `ORT_DYLIB_PATH`, `python: ...`).
    pub source: String,
}

/// Finds the ONNX Runtime library. `explicit` is `--ort-lib`.
/// Returns the places tried when nothing is found.
pub fn find(explicit: Option<&Path>) -> Result<OrtLibrary, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(OrtLibrary {
                path: p.to_path_buf(),
                source: "--ort-lib".into(),
            })
        } else {
            Err(format!("--ort-lib {}: no such file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(OrtLibrary {
                path: p,
                source: "ORT_DYLIB_PATH".into(),
            })
        } else {
            Err(format!("ORT_DYLIB_PATH={}: no such file", p.display()))
        };
    }
    let mut tried = Vec::new();
    for python in pythons() {
        match package_dir(&python) {
            Some(dir) => {
                if let Some(lib) = library_in(&dir.join("capi")) {
                    return Ok(OrtLibrary {
                        path: lib,
                        source: format!("python package {} ({})", dir.display(), python.display()),
                    });
                }
                tried.push(format!(
                    "{}: package at {} holds no library",
                    python.display(),
                    dir.display()
                ));
            }
            None => tried.push(format!("{}: no onnxruntime package", python.display())),
        }
    }
    Err(format!(
        "ONNX Runtime library not found (tried --ort-lib, ORT_DYLIB_PATH, {}); `pip install onnxruntime` or pass --ort-lib PATH",
        if tried.is_empty() { "no python found".to_string() } else { tried.join("; ") }
    ))
}

/// Python interpreters to ask, the active virtualenv's first.
fn pythons() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let p = PathBuf::from(venv).join("bin").join("python3");
        if p.is_file() {
            out.push(p);
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

/// Directory of the `onnxruntime` package as `python` sees it, without importing it.
fn package_dir(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The newest `libonnxruntime.so*` / `.dylib` / `.dll` in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name.starts_with("libonnxruntime.so")
                || name.starts_with("libonnxruntime.") && name.ends_with(".dylib")
                || name == "onnxruntime.dll")
                && !name.contains("providers")
        })
        .collect();
    libs.sort();
    libs.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versioned_library_in_a_capi_folder() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "libonnxruntime.so.1.31.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(
            library_in(dir.path()).unwrap().file_name().unwrap(),
            "libonnxruntime.so.1.32.0"
        );
    }

    #[test]
    fn explicit_path_must_exist() {
        let e = find(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        assert!(e.contains("--ort-lib"), "{e}");
    }
}
