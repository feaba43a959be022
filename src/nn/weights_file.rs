//! A safetensors file of frozen weights (LPIPS, a CLIP text tower), memory-mapped: a model asks
//! for tensors by name and shape, and a missing tensor or a wrong shape is an error naming the
//! file and the tensor. Opened with [`WeightsFile::header_only`], it checks names and shapes
//! against the file's header without reading any weights: planning builds the model that way to
//! refuse a wrong file before anything runs.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{what} {path}: cannot read it as safetensors ({why})")]
    Read {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{what} {path} has no tensor `{name}`; {hint}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        name: String,
        hint: &'static str,
    },
    #[error("{what} {path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        what: &'static str,
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
}

/// The weights of one file.
pub struct WeightsFile {
    path: PathBuf,
    /// What the file is, for messages: "LPIPS weights file".
    what: &'static str,
    /// The naming convention the file must follow, for a missing tensor.
    hint: &'static str,
    st: MmapedSafetensors,
    /// Check names and shapes only; tensors handed out hold no data.
    header_only: bool,
    device: Device,
}

impl WeightsFile {
    /// Opens `path` to load tensors onto `device`.
    pub fn open(
        path: &Path,
        what: &'static str,
        hint: &'static str,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        // SAFETY: the file is only read, while nothing else writes it.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| WeightsError::Read {
            what,
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            what,
            hint,
            st,
            header_only: false,
            device: device.clone(),
        })
    }

    /// Opens `path` to check names and shapes only.
    pub fn header_only(
        path: &Path,
        what: &'static str,
        hint: &'static str,
    ) -> Result<Self, WeightsError> {
        let mut file = Self::open(path, what, hint, &Device::Cpu)?;
        file.header_only = true;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The shape of tensor `name`, if the file has it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st.get(name).ok().map(|v| v.shape().to_vec())
    }

    /// Scalar values of every tensor in the file.
    pub fn elements(&self) -> usize {
        self.st
            .tensors()
            .iter()
            .map(|(_, v)| v.shape().iter().product::<usize>())
            .sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    /// Tensor `name`, which must have shape `expected`, as f32.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightsError> {
        let found = self.shape(name).ok_or_else(|| WeightsError::Missing {
            what: self.what,
            path: self.path.clone(),
            name: name.to_string(),
            hint: self.hint,
        })?;
        if found != expected {
            return Err(WeightsError::Shape {
                what: self.what,
                path: self.path.clone(),
                name: name.to_string(),
                found,
                expected: expected.to_vec(),
            });
        }
        self.load(name, &found)
    }

    /// Tensor `name` with whatever shape it has.
    pub fn get_any(&self, name: &str) -> Result<Tensor, WeightsError> {
        let shape = self.shape(name).ok_or_else(|| WeightsError::Missing {
            what: self.what,
            path: self.path.clone(),
            name: name.to_string(),
            hint: self.hint,
        })?;
        self.load(name, &shape)
    }

    fn load(&self, name: &str, shape: &[usize]) -> Result<Tensor, WeightsError> {
        let read = |e: candle_core::Error| WeightsError::Read {
            what: self.what,
            path: self.path.clone(),
            why: format!("tensor `{name}`: {e}"),
        };
        if self.header_only {
            return Tensor::zeros((), DType::F32, &Device::Cpu)
                .and_then(|z| z.broadcast_as(shape))
                .map_err(read);
        }
        self.st
            .load(name, &self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(read)
    }

    /// A builder over this file, for models written with candle's `VarBuilder`.
    pub fn var_builder(self) -> VarBuilder<'static> {
        let device = self.device.clone();
        VarBuilder::from_backend(Box::new(self), DType::F32, device)
    }
}

impl SimpleBackend for WeightsFile {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        _: DType,
        _: &Device,
    ) -> candle_core::Result<Tensor> {
        WeightsFile::get(self, name, s.dims()).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        self.get_any(name)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn names_and_shapes_are_checked_with_and_without_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("a".to_string(), t)]), &path).unwrap();
        let file = WeightsFile::open(&path, "test weights file", "hint", &Device::Cpu).unwrap();
        let a: Vec<Vec<f32>> = file.get("a", &[2, 2]).unwrap().to_vec2().unwrap();
        assert_eq!(a, vec![vec![1., 2.], vec![3., 4.]]);
        let err = file.get("a", &[4]).unwrap_err().to_string();
        assert!(err.contains("shape [2, 2], expected [4]"), "{err}");
        let err = file.get("b", &[1]).unwrap_err().to_string();
        assert!(err.contains("has no tensor `b`; hint"), "{err}");
        let header = WeightsFile::header_only(&path, "test weights file", "hint").unwrap();
        assert_eq!(header.get("a", &[2, 2]).unwrap().dims(), &[2, 2]);
        std::fs::write(&path, b"not safetensors").unwrap();
        let err = WeightsFile::header_only(&path, "test weights file", "hint")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read it as safetensors"), "{err}");
    }
}
