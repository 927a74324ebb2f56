//! When each rank left its group, and the exit code it chose: what the local launcher needs
//! to name the rank that failed first.
//!
//! When one rank fails, its peers fail a moment later on the broken connection, and the
//! launcher's waiting threads may see those exits in either order on a loaded machine. So a
//! rank that joined a group records, in the file the launcher names in [`DEPARTURE_FILE`],
//! the time it left (CLOCK_MONOTONIC, one clock for all processes of a machine): written
//! when the group is dropped, before its connections close, hence before any peer can notice
//! it is gone; and from an `on_exit` handler, with the exit status it passed to `exit`, so a
//! rank stopped by the launcher while it was exiting is still reported with its own code.
//! This is torchrun's error-file timestamp, to the nanosecond.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the file a rank records its departure in (set by the launcher only).
pub const DEPARTURE_FILE: &str = "PROCESS_GROUP_DEPARTURE_FILE";

/// What a rank recorded: when it left its group, and its exit code once it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departure {
    /// Nanoseconds on [`now`]'s clock.
    pub at: u64,
    pub exit_code: Option<i32>,
}

/// Where this process records its departure, once [`arm`] has found the variable.
static RECORD: OnceLock<PathBuf> = OnceLock::new();
/// When this process first left a group (0: not yet).
static LEFT_AT: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    /// glibc's `on_exit`: like `atexit`, with the status given to `exit`.
    fn on_exit(
        function: extern "C" fn(libc::c_int, *mut libc::c_void),
        arg: *mut libc::c_void,
    ) -> libc::c_int;
}

/// Nanoseconds on this machine's monotonic clock.
pub fn now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Arms the record when the launcher asked for one (a rank joining a group calls it); later
/// calls change nothing. A death by signal before [`left_group`] records nothing, and the
/// launcher uses the time it saw the death instead.
pub fn arm() {
    let Some(path) = std::env::var_os(DEPARTURE_FILE) else {
        return;
    };
    if RECORD.set(PathBuf::from(path)).is_ok() {
        // SAFETY: registers a plain `extern "C"` function; its argument is unused.
        unsafe { on_exit(record_exit, std::ptr::null_mut()) };
    }
}

/// Records that this process leaves its group now (the first time only): called before the
/// group's connections close.
pub fn left_group() {
    if LEFT_AT
        .compare_exchange(0, now(), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        write(None);
    }
}

extern "C" fn record_exit(status: libc::c_int, _: *mut libc::c_void) {
    let _ = LEFT_AT.compare_exchange(0, now(), Ordering::SeqCst, Ordering::SeqCst);
    write(Some(status & 0xff));
}

fn write(exit_code: Option<i32>) {
    let Some(path) = RECORD.get() else { return };
    let at = LEFT_AT.load(Ordering::SeqCst);
    let text = match exit_code {
        Some(code) => format!("{at} {code}"),
        None => at.to_string(),
    };
    // Nothing to do about a failure here: the launcher falls back to what it saw.
    let _ = std::fs::write(path, text);
}

/// What a rank recorded in `path`, if it did.
pub fn read(path: &Path) -> Option<Departure> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let at = fields.next()?.parse().ok()?;
    let exit_code = match fields.next() {
        Some(code) => Some(code.parse().ok()?),
        None => None,
    };
    Some(Departure { at, exit_code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_bad_ones_are_none() {
        let dir = tempfile_dir();
        let path = dir.join("rank-0");
        assert_eq!(read(&path), None);
        let cases = [
            ("12 3", Some((12, Some(3)))),
            ("12", Some((12, None))),
            ("12 x", None),
            ("", None),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let expected = expected.map(|(at, exit_code)| Departure { at, exit_code });
            assert_eq!(read(&path), expected, "{text:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_clock_moves_forward() {
        let before = now();
        assert!(now() >= before && before > 0);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("departure-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
