//! Opening and creating HDF5 files so that child processes never hold them.
//!
//! HDF5 opens its files without `O_CLOEXEC` and locks them with `flock`. A process that
//! starts a child while it has a cache open (a launcher, a test harness running a binary)
//! leaks the descriptor, and with it the lock, into the child for the child's lifetime:
//! a later `H5Fopen` of that file fails with "unable to lock file, errno = 11" even after
//! the parent closed it. Every HDF5 file of this crate goes through here: its descriptor is
//! marked close-on-exec right after the open, and files created under a partial name (the
//! only way this crate writes them, see `stage_kit::write_atomically`) take no lock, since
//! no reader opens a partial name, so even a descriptor leaked in the instant between the
//! open and the marking locks nothing.

use std::os::raw::{c_int, c_void};
use std::path::Path;

/// Opens an existing file read-only, its descriptor closed on exec.
pub fn open(path: &Path) -> hdf5::Result<hdf5::File> {
    let file = hdf5::File::open(path)?;
    close_on_exec(&file)?;
    Ok(file)
}

/// Creates (truncates) a file for writing, without HDF5's lock and closed on exec.
pub fn create(path: &Path) -> hdf5::Result<hdf5::File> {
    let file = hdf5::File::with_options()
        .with_fapl(|fapl| fapl.file_locking(false))
        .create(path)?;
    close_on_exec(&file)?;
    Ok(file)
}

/// Sets `FD_CLOEXEC` on the descriptor of the file's (default, POSIX) driver.
fn close_on_exec(file: &hdf5::File) -> hdf5::Result<()> {
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: the file id is valid while `file` lives; the call only fills `handle`, under
    // the crate's global HDF5 lock as every HDF5 call must be.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle)
    });
    if status < 0 || handle.is_null() {
        return Err(hdf5::Error::from("no file descriptor for the HDF5 file"));
    }
    // SAFETY: the sec2 driver's handle points at its `int` descriptor.
    let fd = unsafe { *(handle as *const c_int) };
    // SAFETY: fcntl on a descriptor the file owns; failure is reported, not ignored.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(hdf5::Error::from(format!(
            "marking the file descriptor close-on-exec: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths a process has open, from `/proc/PID/fd`.
    fn open_paths(pid: u32) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .collect()
    }

    #[test]
    fn a_child_started_while_files_are_open_holds_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let created_path = dir.path().join("created.h5");
        let created = create(&created_path).unwrap();
        created.close().unwrap();
        let held = create(&dir.path().join("held.h5")).unwrap();
        let opened = open(&created_path).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let leaked: Vec<_> = open_paths(child.id())
            .into_iter()
            .filter(|p| p.starts_with(dir.path()))
            .collect();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(leaked.is_empty(), "the child holds {leaked:?}");
        // And the file the parent still reads can be opened again.
        drop((held, opened));
        open(&created_path).unwrap();
    }
}
