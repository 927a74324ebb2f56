//! [`ProcessGroup`]: a rank's handle on a c10d process group (Gloo, or NCCL with the `nccl`
//! feature) with the collectives data-parallel training needs, in place on tch tensors. A
//! world of one needs no store and every collective is the identity.

use std::ffi::CString;
use std::ptr;

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::ffi;
use crate::rendezvous::Rendezvous;

/// The c10d backend of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo: CPU tensors, and CUDA tensors through host copies.
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors (the `nccl` feature).
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices when this build has it, else Gloo.
    pub fn for_device(device: Device) -> Backend {
        if cfg!(feature = "nccl") && device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// One rank's place in a group and, for worlds above one, its connection.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    local_world_size: usize,
    backend: Option<Backend>,
    handle: *mut ffi::PgGroup,
}

// SAFETY: the c10d backend is used from one thread at a time through &self methods that
// only enqueue work and wait for it; libtorch's backends are thread-safe for that (DDP's
// reducer calls them from autograd threads). Collective order is the caller's affair.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// A world of one: no store, collectives change nothing.
    pub fn single() -> Self {
        ProcessGroup {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            backend: None,
            handle: ptr::null_mut(),
        }
    }

    /// Joins the group `rendezvous` describes (a world of one connects to nothing); rank 0
    /// hosts the TCPStore and waits up to the rendezvous timeout for the others. A rank that
    /// joins records its departure for the launcher ([`crate::departure`]).
    pub fn connect(rendezvous: &Rendezvous, backend: Backend) -> Result<Self> {
        let mut group = ProcessGroup {
            rank: rendezvous.rank,
            world_size: rendezvous.world_size,
            local_rank: rendezvous.local_rank,
            local_world_size: rendezvous.local_world_size,
            backend: None,
            handle: ptr::null_mut(),
        };
        if rendezvous.world_size == 1 {
            return Ok(group);
        }
        crate::departure::arm();
        let join_error = |message: String| Error::Join {
            rank: rendezvous.rank,
            world_size: rendezvous.world_size,
            addr: rendezvous.master_addr.clone(),
            port: rendezvous.master_port,
            timeout: rendezvous.timeout,
            message,
        };
        let addr = CString::new(rendezvous.master_addr.as_str())
            .map_err(|_| join_error("MASTER_ADDR contains a NUL byte".into()))?;
        let timeout_ms = i64::try_from(rendezvous.timeout.as_millis()).unwrap_or(i64::MAX);
        let (rank, world) = (rendezvous.rank as i32, rendezvous.world_size as i32);
        let mut handle = ptr::null_mut();
        let error = match backend {
            Backend::Gloo => {
                let (kind, arg) = gloo_device(rendezvous);
                let arg = CString::new(arg)
                    .map_err(|_| join_error("the Gloo device name contains a NUL byte".into()))?;
                // SAFETY: valid C strings and out-pointer; errors come back as strings.
                unsafe {
                    ffi::pg_new_gloo(
                        addr.as_ptr(),
                        rendezvous.master_port,
                        rank,
                        world,
                        timeout_ms,
                        kind,
                        arg.as_ptr(),
                        &mut handle,
                    )
                }
            }
            Backend::Nccl => new_nccl(
                &addr,
                rendezvous.master_port,
                rank,
                world,
                timeout_ms,
                &mut handle,
            )
            .map_err(join_error)?,
        };
        // SAFETY: the shim's return value.
        unsafe { ffi::take_error(error) }.map_err(join_error)?;
        group.backend = Some(backend);
        group.handle = handle;
        tracing::debug!(
            "rank {} of {} joined the {backend:?} group at {}:{}",
            group.rank,
            group.world_size,
            rendezvous.master_addr,
            rendezvous.master_port
        );
        Ok(group)
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// This rank's index among the ranks of its machine.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// How many ranks run on this machine.
    pub fn local_world_size(&self) -> usize {
        self.local_world_size
    }

    /// Rank 0, the one that writes checkpoints, logs and reports.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The backend of a world above one (`None` for a world of one).
    pub fn backend(&self) -> Option<Backend> {
        self.backend
    }

    /// Sums `tensor` over the ranks, in place.
    pub fn all_reduce(&self, tensor: &mut Tensor) -> Result<()> {
        self.start_all_reduce(tensor)?.wait()
    }

    /// Starts summing `tensor` over the ranks, in place; it holds the sum once the returned
    /// [`Work`] has been waited for. Collectives started one after the other run
    /// concurrently (Gloo on its worker threads), as DDP's buckets do.
    pub fn start_all_reduce(&self, tensor: &mut Tensor) -> Result<Work> {
        if self.handle.is_null() {
            return Ok(Work::done(self, "all_reduce"));
        }
        check_dense("all_reduce", tensor)?;
        let mut work = ptr::null_mut();
        // SAFETY: live group, a defined contiguous tensor (c10d keeps a reference to it
        // until the work ends), an out-pointer.
        let error = unsafe { ffi::pg_all_reduce_sum(self.handle, tensor.as_mut_ptr(), &mut work) };
        self.collective("all_reduce", error)?;
        Ok(Work::started(self, "all_reduce", work))
    }

    /// Replaces `tensor` with rank `root`'s values, in place.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        self.start_broadcast(tensor, root)?.wait()
    }

    /// Starts [`ProcessGroup::broadcast`]; `tensor` holds rank `root`'s values once the
    /// returned [`Work`] has been waited for.
    pub fn start_broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<Work> {
        if self.handle.is_null() {
            return Ok(Work::done(self, "broadcast"));
        }
        check_dense("broadcast", tensor)?;
        if root >= self.world_size {
            return Err(Error::Tensor {
                op: "broadcast",
                message: format!(
                    "root {root} is not a rank of a world of {}",
                    self.world_size
                ),
            });
        }
        let mut work = ptr::null_mut();
        // SAFETY: live group, a defined contiguous tensor, a valid root, an out-pointer.
        let error =
            unsafe { ffi::pg_broadcast(self.handle, tensor.as_mut_ptr(), root as i32, &mut work) };
        self.collective("broadcast", error)?;
        Ok(Work::started(self, "broadcast", work))
    }

    /// Every rank's `tensor`, in rank order (same shape and kind on every rank).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        if self.handle.is_null() {
            return Ok(vec![tensor.copy()]);
        }
        check_dense("all_gather", tensor)?;
        let mut input = tensor.shallow_clone();
        let mut outputs: Vec<Tensor> = (0..self.world_size).map(|_| tensor.empty_like()).collect();
        let pointers: Vec<*mut torch_sys::C_tensor> =
            outputs.iter_mut().map(Tensor::as_mut_ptr).collect();
        // SAFETY: live group; world_size defined output tensors shaped like the input.
        let error = unsafe {
            ffi::pg_all_gather(
                self.handle,
                pointers.as_ptr(),
                pointers.len(),
                input.as_mut_ptr(),
            )
        };
        self.collective("all_gather", error)?;
        Ok(outputs)
    }

    /// Returns when every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        if self.handle.is_null() {
            return Ok(());
        }
        // SAFETY: live group.
        let error = unsafe { ffi::pg_barrier(self.handle) };
        self.collective("barrier", error)
    }

    /// Maps a collective's error, naming the lost peer when the world leaves no doubt.
    fn collective(&self, op: &'static str, error: *mut std::ffi::c_char) -> Result<()> {
        collective_result(self.rank, self.world_size, op, error)
    }
}

/// A collective's result from the shim's return value, the lost peer named when the world
/// leaves no doubt.
fn collective_result(
    rank: usize,
    world_size: usize,
    op: &'static str,
    error: *mut std::ffi::c_char,
) -> Result<()> {
    // SAFETY: the shim's return value.
    unsafe { ffi::take_error(error) }.map_err(|message| Error::Collective {
        rank,
        world_size,
        op,
        peer: match world_size {
            2 => format!(" (lost contact with rank {})", 1 - rank),
            _ => String::new(),
        },
        message,
    })
}

/// A collective in flight. [`Work::wait`] ends it; dropping it unwaited waits too (ignoring
/// the error), so the tensor is never released while c10d writes to it. It must not outlive
/// its group.
#[must_use = "a started collective ends only when waited for"]
pub struct Work {
    rank: usize,
    world_size: usize,
    op: &'static str,
    handle: *mut ffi::PgWork,
}

// SAFETY: a c10d Work may be waited for from any thread (DDP's reducer waits on works
// launched from autograd threads).
unsafe impl Send for Work {}

impl Work {
    /// A collective of a world of one: nothing to wait for.
    fn done(group: &ProcessGroup, op: &'static str) -> Self {
        Work::started(group, op, ptr::null_mut())
    }

    fn started(group: &ProcessGroup, op: &'static str, handle: *mut ffi::PgWork) -> Self {
        Work {
            rank: group.rank,
            world_size: group.world_size,
            op,
            handle,
        }
    }

    /// Blocks until the collective has finished on this rank.
    pub fn wait(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
        if handle.is_null() {
            return Ok(());
        }
        // SAFETY: a live work from the shim, waited for and freed once.
        let error = unsafe { ffi::pg_work_wait(handle) };
        unsafe { ffi::pg_work_free(handle) };
        collective_result(self.rank, self.world_size, self.op, error)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            crate::departure::left_group();
            // SAFETY: created by the shim and freed once.
            unsafe { ffi::pg_free(self.handle) };
        }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("local_rank", &self.local_rank)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Gloo listens on 127.0.0.1 for a loopback rendezvous, on `GLOO_SOCKET_IFNAME` when set
/// (as PyTorch reads it), else on the address of this machine's hostname.
fn gloo_device(rendezvous: &Rendezvous) -> (i32, String) {
    if rendezvous.is_loopback() {
        return (ffi::GLOO_HOSTNAME, "127.0.0.1".to_owned());
    }
    match std::env::var("GLOO_SOCKET_IFNAME") {
        Ok(interface) if !interface.is_empty() => {
            // PyTorch takes a comma-separated list; one device per group is enough here.
            let first = interface.split(',').next().unwrap_or_default().to_owned();
            (ffi::GLOO_INTERFACE, first)
        }
        _ => (ffi::GLOO_DEFAULT, String::new()),
    }
}

#[cfg(feature = "nccl")]
fn new_nccl(
    addr: &CString,
    port: u16,
    rank: i32,
    world: i32,
    timeout_ms: i64,
    handle: &mut *mut ffi::PgGroup,
) -> Result<*mut std::ffi::c_char, String> {
    // SAFETY: valid C string and out-pointer; errors come back as strings.
    Ok(unsafe { ffi::pg_new_nccl(addr.as_ptr(), port, rank, world, timeout_ms, handle) })
}

#[cfg(not(feature = "nccl"))]
fn new_nccl(
    _: &CString,
    _: u16,
    _: i32,
    _: i32,
    _: i64,
    _: &mut *mut ffi::PgGroup,
) -> Result<*mut std::ffi::c_char, String> {
    Err("this build has no NCCL: build process-group with the nccl feature".to_owned())
}

fn check_dense(op: &'static str, tensor: &Tensor) -> Result<()> {
    if !tensor.defined() {
        return Err(Error::Tensor {
            op,
            message: "undefined tensor".into(),
        });
    }
    if !tensor.is_contiguous() {
        return Err(Error::Tensor {
            op,
            message: format!("tensor of shape {:?} is not contiguous", tensor.size()),
        });
    }
    Ok(())
}
