//! [`GradHooks`]: a callback after autograd has accumulated each parameter's gradient, the
//! signal on which PyTorch DDP's reducer starts a bucket's all-reduce while the rest of the
//! backward still runs.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::ffi;

type Callback = dyn Fn(usize) + Send + Sync;

/// Post hooks on the gradient accumulators of `params`: `on_ready(i)` runs once per
/// backward that reaches parameter `i`, when its `.grad` holds that backward's whole
/// contribution (a parameter used twice is reported once), on the thread running that part
/// of the backward. Dropping the value removes the hooks.
pub struct GradHooks {
    handle: *mut ffi::PgGradHooks,
    /// The callback the hooks point at; freed after them.
    _on_ready: Box<Box<Callback>>,
}

// SAFETY: the handle is only freed, once, by Drop; the callback is Send + Sync.
unsafe impl Send for GradHooks {}
unsafe impl Sync for GradHooks {}

impl GradHooks {
    /// Installs the hooks; every parameter must be a leaf tensor that requires grad.
    pub fn new(
        params: &[Tensor],
        on_ready: impl Fn(usize) + Send + Sync + 'static,
    ) -> Result<Self> {
        let on_ready: Box<Box<Callback>> = Box::new(Box::new(on_ready));
        let context = (&*on_ready as *const Box<Callback>)
            .cast_mut()
            .cast::<c_void>();
        let mut params: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let pointers: Vec<*mut torch_sys::C_tensor> =
            params.iter_mut().map(Tensor::as_mut_ptr).collect();
        let mut handle = ptr::null_mut();
        // SAFETY: `pointers` are live tensors; `context` stays valid until the hooks are
        // removed (it is dropped after them).
        let error = unsafe {
            ffi::pg_grad_hooks_new(
                pointers.as_ptr(),
                pointers.len(),
                ready,
                context,
                &mut handle,
            )
        };
        // SAFETY: the shim's return value.
        unsafe { ffi::take_error(error) }.map_err(|message| Error::Tensor {
            op: "gradient hooks",
            message,
        })?;
        Ok(GradHooks {
            handle,
            _on_ready: on_ready,
        })
    }
}

impl Drop for GradHooks {
    fn drop(&mut self) {
        // SAFETY: created by the shim and freed once, before the callback.
        unsafe { ffi::pg_grad_hooks_free(self.handle) };
    }
}

/// The trampoline the shim calls: a panic in the callback must not unwind into libtorch.
unsafe extern "C" fn ready(context: *mut c_void, index: usize) {
    // SAFETY: `context` is the `Box<Callback>` that `GradHooks::new` installed, alive
    // while the hooks are.
    let on_ready = unsafe { &*context.cast::<Box<Callback>>() };
    if catch_unwind(AssertUnwindSafe(|| on_ready(index))).is_err() {
        eprintln!("a gradient-ready hook panicked (parameter {index}); aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tch::{Kind, Tensor};

    use super::*;

    #[test]
    fn each_parameter_is_reported_once_per_backward_after_accumulation() {
        let a = Tensor::ones([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let seen: Arc<Mutex<Vec<(usize, f64)>>> = Arc::default();
        let params = [a.shallow_clone(), b.shallow_clone()];
        let hooks = {
            let seen = seen.clone();
            let watched = Mutex::new(params.iter().map(Tensor::shallow_clone).collect::<Vec<_>>());
            GradHooks::new(&params, move |i| {
                let sum = watched.lock().unwrap()[i].grad().sum(Kind::Float);
                seen.lock().unwrap().push((i, sum.double_value(&[])));
            })
            .unwrap()
        };
        // `a` is used twice: its accumulated gradient is 2 + 3 per element.
        ((&a * 2.0).sum(Kind::Float) + (&a * 3.0).sum(Kind::Float) + b.sum(Kind::Float)).backward();
        let mut first = seen.lock().unwrap().clone();
        first.sort_by_key(|&(i, _)| i);
        assert_eq!(first, [(0, 15.0), (1, 2.0)]);
        // A second graph reaches the same accumulators; `b` is not in it.
        a.sum(Kind::Float).backward();
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(seen.lock().unwrap()[2], (0, 18.0));
        drop(hooks);
        a.sum(Kind::Float).backward();
        assert_eq!(seen.lock().unwrap().len(), 3, "hooks are gone after drop");
    }

    #[test]
    fn a_tensor_without_grad_is_refused() {
        let t = Tensor::ones([2], (Kind::Float, tch::Device::Cpu));
        let error = GradHooks::new(&[t], |_| {}).err().unwrap().to_string();
        assert!(error.contains("parameter 0"), "{error}");
    }
}
