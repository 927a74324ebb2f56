//! Resolving a configured [`DeviceSpec`] to a libtorch device, for every stage that computes
//! with libtorch (feature extraction is the first of them; training, clustering and the
//! emotion MLP resolve through here too).

use stage_kit::DeviceSpec;
use tch::{Cuda, Device};

/// A CUDA device that was asked for but is not visible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {asked}: {visible} CUDA device(s) are visible to libtorch")]
pub struct UnavailableDevice {
    pub asked: String,
    pub visible: usize,
}

/// `auto`: the first CUDA device when one is visible, else the CPU; `cuda` is `cuda:0`.
pub fn resolve(spec: DeviceSpec) -> Result<Device, UnavailableDevice> {
    resolve_for_rank(spec, 0)
}

/// [`resolve`] for the process with index `local_rank` on its machine: `auto` and `cuda` mean
/// `cuda:LOCAL_RANK` when CUDA is there (one GPU per rank, as torchrun's recipes do).
pub fn resolve_for_rank(spec: DeviceSpec, local_rank: usize) -> Result<Device, UnavailableDevice> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto if !Cuda::is_available() => Ok(Device::Cpu),
        DeviceSpec::Auto | DeviceSpec::Cuda(None) => cuda(spec, local_rank),
        DeviceSpec::Cuda(Some(index)) => cuda(spec, index),
    }
}

fn cuda(spec: DeviceSpec, index: usize) -> Result<Device, UnavailableDevice> {
    let visible = Cuda::device_count().max(0) as usize;
    if index >= visible {
        return Err(UnavailableDevice {
            asked: match spec {
                DeviceSpec::Cuda(Some(_)) => spec.to_string(),
                _ => format!("{spec} (cuda:{index})"),
            },
            visible,
        });
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_what_this_machine_has() {
        assert_eq!(resolve(DeviceSpec::Cpu), Ok(Device::Cpu));
        let count = Cuda::device_count().max(0) as usize;
        if count == 0 {
            assert_eq!(resolve(DeviceSpec::Auto), Ok(Device::Cpu));
            let err = resolve(DeviceSpec::Cuda(None)).unwrap_err().to_string();
            assert_eq!(
                err,
                "device cuda (cuda:0): 0 CUDA device(s) are visible to libtorch"
            );
        } else {
            assert_eq!(resolve_for_rank(DeviceSpec::Auto, 0), Ok(Device::Cuda(0)));
        }
        let past = DeviceSpec::Cuda(Some(count));
        assert!(
            resolve_for_rank(past, 0)
                .unwrap_err()
                .to_string()
                .contains(&format!("cuda:{count}"))
        );
    }
}
