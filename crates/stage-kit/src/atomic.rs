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

/// Removes the temporaries of [`partial_path`] in `dir` whose writing process is gone (a run
/// killed while writing leaves them, and at scale they are gigabytes); those of live processes
/// stay. Returns how many were removed. A missing folder has none.
pub fn remove_stale_partials(dir: &Path) -> Result<usize, FileError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FileError::new(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry.map_err(|e| FileError::new(dir, e))?.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(partial_writer)
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            fs::remove_file(&path).map_err(|e| FileError::new(&path, e))?;
            tracing::info!("removed {}, left by a run that was killed", path.display());
            removed += 1;
        }
    }
    Ok(removed)
}

/// The pid in a name made by [`partial_path`] (`.{name}.partial-{pid}-{call}`).
fn partial_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".partial-")?;
    let (pid, call) = tail.split_once('-')?;
    call.parse::<u64>().ok()?;
    pid.parse().ok()
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

    #[test]
    fn stale_partials_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let final_path = dir.path().join("audio.h5");
        let live = partial_path(&final_path);
        fs::write(&live, b"being written").unwrap();
        // pid 0 is never a process of /proc (the kernel's idle task has no entry there).
        let dead = dir.path().join(".audio.h5.partial-0-3");
        fs::write(&dead, b"left by kill -9").unwrap();
        let unrelated = dir.path().join(".audio.h5.partial-notes");
        fs::write(&unrelated, b"").unwrap();
        assert_eq!(remove_stale_partials(dir.path()).unwrap(), 1);
        assert!(live.exists() && unrelated.exists() && !dead.exists());
        assert_eq!(remove_stale_partials(&dir.path().join("none")).unwrap(), 0);
        assert_eq!(partial_writer(".x.partial-12-4"), Some(12));
        assert_eq!(partial_writer("x.partial-12-4"), None);
    }
}
