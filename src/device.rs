//! Which device tensors live on: `cpu`, `cuda` or `cuda:<index>`, parsed once (from the
//! experiment file, `--set` or `--device`) into a [`DeviceSpec`].

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A device as written in `experiment.device` or `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

/// A device name that is none of `cpu`, `cuda`, `cuda:<index>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a device; expected `cpu`, `cuda` or `cuda:<index>` (e.g. cuda:1)")]
pub struct DeviceParseError(pub String);

impl FromStr for DeviceSpec {
    type Err = DeviceParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceParseError(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DeviceSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Device".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(cpu|cuda|cuda:[0-9]+)$",
            "description": "`cpu`, `cuda` or `cuda:<index>` (CUDA needs a build with `--features cuda`)."
        })
    }
}

impl DeviceSpec {
    /// Opens the device; CUDA needs a build with `--features cuda` and a visible GPU.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => {
                if !candle_core::utils::cuda_is_available() {
                    anyhow::bail!(
                        "device cuda:{index} asked for, but this ldm-run was built without CUDA; \
                         rebuild with `cargo build --release --features cuda` or use device = \"cpu\""
                    );
                }
                Device::new_cuda(index).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open cuda:{index}: {e} (`nvidia-smi` lists this machine's GPUs \
                         and driver; use device = \"cpu\" without one)"
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        for bad in ["gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:+1", "CPU", ""] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("expected `cpu`"), "{bad}: {err}");
        }
        for d in [DeviceSpec::Cpu, DeviceSpec::Cuda(0), DeviceSpec::Cuda(2)] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
    }
}
