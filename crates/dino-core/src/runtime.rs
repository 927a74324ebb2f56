//! What libtorch this process runs on: version, threads, devices. Behind `dino-core doctor`.

use std::path::PathBuf;

use tch::Cuda;

/// A description of the libtorch runtime of this process.
#[derive(Debug, Clone)]
pub struct RuntimeReport {
    /// The libtorch the binary was linked against (read at build time).
    pub build_version: &'static str,
    /// The folder the dynamic loader actually took `libtorch_cpu.so` from.
    pub loaded_from: Option<PathBuf>,
    /// Version of that libtorch, read from its files at run time.
    pub loaded_version: Option<String>,
    pub intra_op_threads: i32,
    pub inter_op_threads: i32,
    pub cuda_available: bool,
    pub cudnn_available: bool,
    /// Names of the visible CUDA devices.
    pub cuda_devices: Vec<String>,
}

impl RuntimeReport {
    pub fn collect() -> Self {
        // Touch libtorch so that it is certainly loaded before /proc/self/maps is read.
        let intra_op_threads = tch::get_num_threads();
        let loaded_from = loaded_library_dir("libtorch_cpu.so");
        let loaded_version = loaded_from
            .as_deref()
            .and_then(torch_link::libtorch_version);
        let cuda_available = Cuda::is_available();
        let cuda_devices = if cuda_available {
            (0..Cuda::device_count())
                .map(|i| cuda_device_name(i as usize))
                .collect()
        } else {
            Vec::new()
        };
        RuntimeReport {
            build_version: env!("LIBTORCH_BUILD_VERSION"),
            loaded_from,
            loaded_version,
            intra_op_threads,
            inter_op_threads: tch::get_num_interop_threads(),
            cuda_available,
            cudnn_available: Cuda::cudnn_is_available(),
            cuda_devices,
        }
    }
}

impl std::fmt::Display for RuntimeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "libtorch (build): {}", self.build_version)?;
        match (&self.loaded_from, &self.loaded_version) {
            (Some(dir), version) => writeln!(
                f,
                "libtorch (loaded): {} from {}",
                version.as_deref().unwrap_or("unknown version"),
                dir.display()
            )?,
            (None, _) => writeln!(f, "libtorch (loaded): not found in /proc/self/maps")?,
        }
        writeln!(
            f,
            "threads: {} intra-op, {} inter-op",
            self.intra_op_threads, self.inter_op_threads
        )?;
        writeln!(
            f,
            "CUDA available: {}",
            if self.cuda_available { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "cuDNN available: {}",
            if self.cudnn_available { "yes" } else { "no" }
        )?;
        for (i, name) in self.cuda_devices.iter().enumerate() {
            writeln!(f, "  cuda:{i} {name}")?;
        }
        Ok(())
    }
}

/// Folder of a shared library mapped into this process (Linux).
fn loaded_library_dir(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|path| path.file_name().is_some_and(|n| n == file_name))
        .and_then(|path| path.parent().map(PathBuf::from))
}

/// Name of CUDA device `index` from the driver API (`cuDeviceGetName` in libcuda.so.1),
/// which tch does not expose; driver ordinals match libtorch's, CUDA_VISIBLE_DEVICES included.
fn cuda_device_name(index: usize) -> String {
    cuda_driver::device_name(index).unwrap_or_else(|| format!("cuda:{index} (name unavailable)"))
}

mod cuda_driver {
    use std::ffi::{CStr, c_char, c_int, c_void};

    const RTLD_NOW: c_int = 2;

    unsafe extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }

    type CuInit = unsafe extern "C" fn(flags: u32) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(device: *mut c_int, ordinal: c_int) -> c_int;
    type CuDeviceGetName =
        unsafe extern "C" fn(name: *mut c_char, len: c_int, device: c_int) -> c_int;

    pub fn device_name(index: usize) -> Option<String> {
        // SAFETY: the symbols are looked up in the CUDA driver library with the signatures the
        // driver API documents (stable since CUDA 2.0); the name buffer is sized and
        // NUL-terminated by the driver, and we only read it after a successful call.
        unsafe {
            let lib = dlopen(c"libcuda.so.1".as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let symbol = |name: &CStr| {
                let ptr = dlsym(lib, name.as_ptr());
                (!ptr.is_null()).then_some(ptr)
            };
            let init: CuInit = std::mem::transmute(symbol(c"cuInit")?);
            let get: CuDeviceGet = std::mem::transmute(symbol(c"cuDeviceGet")?);
            let get_name: CuDeviceGetName = std::mem::transmute(symbol(c"cuDeviceGetName")?);
            if init(0) != 0 {
                return None;
            }
            let mut device = 0;
            if get(&mut device, c_int::try_from(index).ok()?) != 0 {
                return None;
            }
            let mut name = [0 as c_char; 256];
            if get_name(name.as_mut_ptr(), name.len() as c_int, device) != 0 {
                return None;
            }
            Some(CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn tensors_and_autograd_work() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let y = (&x * &x).sum(Kind::Float);
        y.backward();
        let grad: Vec<f32> = x.grad().try_into().unwrap();
        assert_eq!(grad, vec![2.0, 4.0, 6.0]);
        assert_eq!(y.double_value(&[]), 14.0);
    }

    #[test]
    fn report_finds_the_loaded_libtorch() {
        let report = RuntimeReport::collect();
        assert!(report.build_version.starts_with("2.11."), "{report}");
        assert_eq!(
            report.loaded_version.as_deref(),
            Some(report.build_version),
            "{report}"
        );
        assert!(report.intra_op_threads >= 1);
    }
}
