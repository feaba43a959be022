//! Which device tensors live on: `cpu`, `cuda` or `cuda:<index>`.

use candle_core::Device;

/// A device as written in `experiment.device` or `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// Parses `cpu`, `cuda` or `cuda:<index>`.
pub fn parse(text: &str) -> Result<DeviceSpec, String> {
    match text.trim() {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| {
                format!("`{other}` is not a device; expected `cpu`, `cuda` or `cuda:<index>`")
            }),
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
                Device::new_cuda(index)
                    .map_err(|e| anyhow::anyhow!("cannot open cuda:{index}: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(parse("gpu").unwrap_err().contains("expected `cpu`"));
        assert!(parse("cuda:x").is_err());
    }
}
