//! Creating the files and folders georob writes: never through a symbolic link. A link
//! planted where georob writes (in an output folder a shard or an earlier run filled)
//! would send the write, and what it truncates, anywhere on the machine.

use std::fs::File;
use std::path::{Component, Path};

use crate::error::{Error, Result};

fn refused(path: &Path) -> Error {
    Error::Unreadable {
        path: path.to_path_buf(),
        reason: "is a symbolic link; georob does not write through links".into(),
    }
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates (or truncates) the file `path` for writing, unless it is a symbolic link.
pub fn create(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    open(path, &mut options)
}

/// Opens the existing file `path` for writing (not truncated), unless it is a symbolic link.
pub fn open_existing(path: &Path) -> Result<File> {
    open(path, std::fs::OpenOptions::new().write(true))
}

#[cfg(unix)]
fn open(path: &Path, options: &mut std::fs::OpenOptions) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // O_NOFOLLOW: the open fails (ELOOP) when the last component is a link, with no window
    // between a check and the open. O_NONBLOCK: opening a FIFO to write waits for a reader,
    // forever when none comes; without blocking it fails (ENXIO) or opens, and is refused.
    let not_regular = || Error::Unreadable {
        path: path.to_path_buf(),
        reason: "is a FIFO or socket; georob writes regular files".into(),
    };
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused(path),
            Some(libc::ENXIO) => not_regular(),
            _ => Error::io(path, e),
        })?;
    let kind = file.metadata().map_err(|e| Error::io(path, e))?.file_type();
    if kind.is_fifo() || kind.is_socket() {
        return Err(not_regular());
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open(path: &Path, options: &mut std::fs::OpenOptions) -> Result<File> {
    if is_link(path) {
        return Err(refused(path));
    }
    options.open(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` (created or truncated), unless it is a symbolic link.
pub fn bytes(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write;
    create(path)?
        .write_all(bytes.as_ref())
        .map_err(|e| Error::io(path, e))
}

/// Creates the folder `path` if it is missing; fails when it is a symbolic link or a file.
pub fn dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(refused(path)),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Unreadable {
            path: path.to_path_buf(),
            reason: "is a file where georob writes a folder".into(),
        }),
        Err(_) => std::fs::create_dir(path).map_err(|e| Error::io(path, e)),
    }
}

/// Creates the folders of `rel` (relative, plain names only) under `base`, one level at a
/// time, none of them through a symbolic link; returns `base/rel`.
pub fn dirs_under(base: &Path, rel: &Path) -> Result<std::path::PathBuf> {
    let mut path = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(name) => path.push(name),
            _ => {
                return Err(Error::Config(format!(
                    "{}: {} is not a plain relative path",
                    base.display(),
                    rel.display()
                )))
            }
        }
        dir(&path)?;
    }
    Ok(path)
}

/// `base/rel` when `rel` is a plain relative path (no root, no `..`) and nothing from `base`
/// down to it is a symbolic link: a path read from a journal or report that stays inside
/// its folder.
pub fn inside(base: &Path, rel: &Path) -> Option<std::path::PathBuf> {
    let mut path = base.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return None;
        };
        path.push(name);
        if is_link(&path) {
            return None;
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn links_are_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target.txt");
        std::fs::write(&target, "keep").unwrap();
        let link = d.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = bytes(&link, "x").unwrap_err().to_string();
        assert!(e.contains("link.txt") && e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::os::unix::fs::symlink(d.path(), d.path().join("up")).unwrap();
        assert!(dirs_under(d.path(), Path::new("up/x")).is_err());
        assert!(dirs_under(d.path(), Path::new("../x")).is_err());
        assert_eq!(
            dirs_under(d.path(), Path::new("a/b")).unwrap(),
            d.path().join("a/b")
        );
        assert_eq!(inside(d.path(), Path::new("up/target.txt")), None);
        assert_eq!(inside(d.path(), Path::new("/etc/passwd")), None);
        assert_eq!(inside(d.path(), Path::new("../x")), None);
        assert_eq!(
            inside(d.path(), Path::new("a/b")),
            Some(d.path().join("a/b"))
        );
    }
}
