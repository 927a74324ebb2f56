//! Declarations of the C++ shim (`csrc/shim.h`). Every function returns NULL on success or
//! an error message that [`take_error`] turns into a `String` and frees.

use std::ffi::{CStr, c_char};

use torch_sys::C_tensor;

/// Opaque `pg_group`: a rendezvous store and one c10d backend.
#[repr(C)]
pub struct PgGroup {
    _private: [u8; 0],
}

/// `pg_gloo_device`: how the Gloo transport chooses its listening address.
pub const GLOO_HOSTNAME: i32 = 0;
pub const GLOO_INTERFACE: i32 = 1;
pub const GLOO_DEFAULT: i32 = 2;

unsafe extern "C" {
    pub fn pg_new_gloo(
        master_addr: *const c_char,
        master_port: u16,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
        device_kind: i32,
        device_arg: *const c_char,
        out: *mut *mut PgGroup,
    ) -> *mut c_char;
    #[cfg(feature = "nccl")]
    pub fn pg_new_nccl(
        master_addr: *const c_char,
        master_port: u16,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
        out: *mut *mut PgGroup,
    ) -> *mut c_char;
    pub fn pg_free(group: *mut PgGroup);
    fn pg_free_error(error: *mut c_char);
    pub fn pg_all_reduce_sum(group: *mut PgGroup, tensor: *mut C_tensor) -> *mut c_char;
    pub fn pg_broadcast(group: *mut PgGroup, tensor: *mut C_tensor, root: i32) -> *mut c_char;
    pub fn pg_all_gather(
        group: *mut PgGroup,
        outputs: *const *mut C_tensor,
        world_size: usize,
        input: *mut C_tensor,
    ) -> *mut c_char;
    pub fn pg_barrier(group: *mut PgGroup) -> *mut c_char;
}

/// `Ok` for NULL, else the message (freed here).
///
/// # Safety
/// `error` is NULL or a string returned by a shim function and not yet freed.
pub unsafe fn take_error(error: *mut c_char) -> Result<(), String> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns NUL-terminated strings from malloc.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { pg_free_error(error) };
    Err(message)
}
