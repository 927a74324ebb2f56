//! Declarations of the C++ shim (`csrc/shim.h`). Every function returns NULL on success or
//! an error message that [`take_error`] turns into a `String` and frees.

use std::ffi::{CStr, c_char, c_void};

use torch_sys::C_tensor;

/// Opaque `pg_group`: a rendezvous store and one c10d backend.
#[repr(C)]
pub struct PgGroup {
    _private: [u8; 0],
}

/// Opaque `pg_work`: a collective in flight.
#[repr(C)]
pub struct PgWork {
    _private: [u8; 0],
}

/// Opaque `pg_grad_hooks`: gradient-ready hooks on a list of parameters.
#[repr(C)]
pub struct PgGradHooks {
    _private: [u8; 0],
}

/// `pg_grad_ready`: called with a context and a parameter's index.
pub type GradReady = unsafe extern "C" fn(context: *mut c_void, index: usize);

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
    pub fn pg_all_reduce_sum(
        group: *mut PgGroup,
        tensor: *mut C_tensor,
        out: *mut *mut PgWork,
    ) -> *mut c_char;
    pub fn pg_broadcast(
        group: *mut PgGroup,
        tensor: *mut C_tensor,
        root: i32,
        out: *mut *mut PgWork,
    ) -> *mut c_char;
    pub fn pg_work_wait(work: *mut PgWork) -> *mut c_char;
    pub fn pg_work_free(work: *mut PgWork);
    pub fn pg_grad_hooks_new(
        params: *const *mut C_tensor,
        count: usize,
        ready: GradReady,
        context: *mut c_void,
        out: *mut *mut PgGradHooks,
    ) -> *mut c_char;
    pub fn pg_grad_hooks_free(hooks: *mut PgGradHooks);
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
