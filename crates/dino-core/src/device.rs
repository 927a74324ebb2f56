//! Choosing the libtorch device from a configuration string.

use tch::{Cuda, Device};

use crate::error::{Error, Result};

/// `auto` (the first CUDA device when one is visible, else the CPU), `cpu`, `cuda` or
/// `cuda:N`.
pub fn resolve(spec: &str) -> Result<Device> {
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(index) => cuda(index),
            None => Err(Error::Config(format!(
                "device {other:?}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// [`resolve`] for the rank with index `local_rank` on its machine: `auto` and `cuda` mean
/// `cuda:LOCAL_RANK` when CUDA is there (one GPU per rank, as torchrun's recipes do).
pub fn resolve_for_rank(spec: &str, local_rank: usize) -> Result<Device> {
    match spec {
        "auto" if Cuda::is_available() => cuda(local_rank),
        "cuda" => cuda(local_rank),
        other => resolve(other),
    }
}

fn cuda(index: usize) -> Result<Device> {
    let count = Cuda::device_count() as usize;
    if index >= count {
        return Err(Error::Config(format!(
            "cuda:{index} requested but {count} CUDA device(s) are visible"
        )));
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(resolve("cpu").unwrap(), Device::Cpu);
        assert!(
            resolve("gpu")
                .unwrap_err()
                .to_string()
                .contains("expected auto")
        );
        if !Cuda::is_available() {
            assert_eq!(resolve("auto").unwrap(), Device::Cpu);
            assert!(resolve("cuda").is_err());
        }
    }
}
