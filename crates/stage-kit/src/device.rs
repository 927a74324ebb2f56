//! The device a stage computes on, as configurations and command lines write it: `auto`,
//! `cpu`, `cuda` or `cuda:N`. One type for every stage and for the runner, which parses the
//! pipeline's device at plan time; the stages that link libtorch resolve it to a device
//! (`feature_extract::device`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configured device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// CUDA when libtorch sees a GPU (the rank's own under data parallelism), else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device: `cuda` leaves the index to the process (0, or the rank's local index),
    /// `cuda:N` names it.
    Cuda(Option<usize>),
}

/// A device string that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {0:?}: expected auto, cpu, cuda or cuda:N")]
pub struct BadDevice(pub String);

impl DeviceSpec {
    /// Whether this asks for CUDA explicitly.
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }
}

impl FromStr for DeviceSpec {
    type Err = BadDevice;

    fn from_str(s: &str) -> Result<Self, BadDevice> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| DeviceSpec::Cuda(Some(n)))
                .ok_or_else(|| BadDevice(other.to_owned())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_form() {
        for text in ["auto", "cpu", "cuda", "cuda:3"] {
            let spec: DeviceSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), spec);
        }
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(Some(1))));
    }

    #[test]
    fn refuses_other_strings_by_name() {
        for text in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = text.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
        let err = toml::from_str::<toml::Table>("d = 'gpu'")
            .map(|t| t["d"].clone().try_into::<DeviceSpec>())
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
    }
}
