//! Opening the files a user names: regular files only, of bounded size. A FIFO would block
//! forever and a device such as `/dev/zero` never ends, so the file is opened without
//! blocking and its type checked on the open handle before a byte is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The largest settings or list file read (sidecar, suite, class names, thresholds,
/// `labels.txt`, CSV manifest): 64 MiB.
pub const TEXT_CAP: u64 = 64 << 20;

/// The largest model file read: 2 GiB, the most a protobuf message can hold.
pub const MODEL_CAP: u64 = 2 << 30;

/// The largest image file decoded: 512 MiB.
pub const IMAGE_CAP: u64 = 512 << 20;

/// Opens `path` for reading if it is a regular file of at most `cap` bytes.
pub fn open(path: &Path, cap: u64) -> Result<File> {
    let file = open_nonblocking(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Unreadable {
            path: path.to_path_buf(),
            reason: format!(
                "not a regular file (a {}); georob reads regular files only",
                kind(&meta.file_type())
            ),
        });
    }
    if meta.len() > cap {
        return Err(Error::Unreadable {
            path: path.to_path_buf(),
            reason: format!(
                "the file holds {} bytes, more than the {} georob reads from such a file",
                meta.len(),
                crate::limits::format_bytes(cap.into())
            ),
        });
    }
    Ok(file)
}

/// The bytes of the regular file `path` of at most `cap` bytes.
pub fn bytes(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let file = open(path, cap)?;
    let mut out = Vec::new();
    // The length was checked, but a file may grow while it is read.
    file.take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    Ok(out)
}

/// The text of the regular file `path` of at most `cap` bytes.
pub fn text(path: &Path, cap: u64) -> Result<String> {
    String::from_utf8(bytes(path, cap)?).map_err(|_| Error::Unreadable {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })
}

/// Whether the folder entry `path` (links followed) is a regular file: `Ok(false)` for a
/// folder, an error naming it for anything else (a FIFO, a device, a dangling link), so that
/// a listing does not silently drop an entry that looks like an input.
pub fn is_regular_entry(path: &Path) -> Result<bool> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(true);
    }
    if meta.is_dir() {
        return Ok(false);
    }
    Err(Error::Unreadable {
        path: path.to_path_buf(),
        reason: format!(
            "not a regular file (a {}); georob reads regular files only",
            kind(&meta.file_type())
        ),
    })
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK only changes how FIFOs and devices open and read; on a regular file, the
    // only kind read past the check above, it has no effect.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_devices_and_large_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = open(d.path(), TEXT_CAP).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a folder)"), "{e}");
        #[cfg(unix)]
        {
            let e = bytes(Path::new("/dev/zero"), TEXT_CAP).unwrap_err();
            assert!(e
                .to_string()
                .contains("/dev/zero: not a regular file (a device)"));
        }
        let p = d.path().join("big.txt");
        std::fs::write(&p, "0123456789").unwrap();
        let e = text(&p, 4).unwrap_err().to_string();
        assert!(e.contains("big.txt") && e.contains("10 bytes"), "{e}");
        assert_eq!(text(&p, 10).unwrap(), "0123456789");
    }
}
