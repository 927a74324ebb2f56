//! Outputs are never left half-written under their final name: each is written to a
//! temporary sibling and renamed into place once complete.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O error on a named file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl FileError {
    pub fn new(path: &Path, source: io::Error) -> Self {
        FileError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Temporary sibling of `path` used while it is being written (same folder, so the final
/// rename stays on one file system and is atomic). Unique per call, so that threads of one
/// process writing the same output never share a temporary.
pub fn partial_path(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.partial-{}-{call}", std::process::id()))
}

/// Runs `write` on a temporary path and renames the result to `path` when it succeeds; on
/// failure the temporary file is removed and `path` is left as it was. I/O errors of the
/// bookkeeping itself name `path`.
pub fn write_atomically<T, E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<FileError>,
{
    let file_error = |source| E::from(FileError::new(path, source));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| E::from(FileError::new(parent, source)))?;
    }
    let partial = partial_path(path);
    match write(&partial) {
        Ok(value) => {
            fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(file_error)?;
            fs::rename(&partial, path).map_err(file_error)?;
            Ok(value)
        }
        Err(err) => {
            let _ = fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomically(path, |partial| {
        fs::write(partial, bytes).map_err(|source| FileError::new(path, source))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_previous_content_and_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_bytes_atomically(&path, b"first").unwrap();
        let result: Result<(), FileError> = write_atomically(&path, |partial| {
            fs::write(partial, b"half").unwrap();
            Err(FileError::new(partial, io::Error::other("interrupted")))
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }
}
