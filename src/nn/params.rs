//! Named parameters: created by the model constructors through a `VarBuilder`, initialised from
//! the experiment seed (each tensor from its own stream, keyed by its path, so the values do not
//! depend on construction order), or filled from a checkpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::VarBuilder;
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;

use crate::rng::Rng;

struct Inner {
    seed: u64,
    /// Values to use instead of a fresh initialisation (from a checkpoint).
    preset: BTreeMap<String, Tensor>,
    /// Trainable: parameters are `Var`s; frozen: plain tensors, so no gradient is tracked.
    trainable: bool,
    /// Record names and shapes only: every parameter is a zero-sized broadcast, so a network
    /// of any size can be built to count its parameters.
    shapes_only: bool,
    made: Mutex<BTreeMap<String, Tensor>>,
    vars: Mutex<BTreeMap<String, Var>>,
}

/// The parameters of one network.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Inner>,
    device: Device,
}

impl ParamStore {
    /// Fresh trainable parameters drawn from `seed`.
    pub fn seeded(seed: u64, device: &Device) -> Self {
        Self::build(seed, BTreeMap::new(), true, device)
    }

    /// Names and shapes only, for counting (see [`Inner::shapes_only`]).
    pub fn shapes_only() -> Self {
        let mut store = Self::build(0, BTreeMap::new(), false, &Device::Cpu);
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.shapes_only = true;
        }
        store
    }

    /// Parameters with values from `tensors` (e.g. a checkpoint); every parameter the model
    /// asks for must be present. `trainable = false` gives frozen tensors.
    pub fn from_tensors(
        tensors: BTreeMap<String, Tensor>,
        trainable: bool,
        device: &Device,
    ) -> Self {
        Self::build(0, tensors, trainable, device)
    }

    fn build(
        seed: u64,
        preset: BTreeMap<String, Tensor>,
        trainable: bool,
        device: &Device,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                seed,
                preset,
                trainable,
                shapes_only: false,
                made: Mutex::new(BTreeMap::new()),
                vars: Mutex::new(BTreeMap::new()),
            }),
            device: device.clone(),
        }
    }

    /// A builder whose tensors land in this store.
    pub fn vb(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, self.device.clone())
    }

    /// Trainable variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let vars = self.inner.vars.lock().unwrap_or_else(|p| p.into_inner());
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Every parameter's current value, sorted by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let made = self.inner.made.lock().unwrap_or_else(|p| p.into_inner());
        let vars = self.inner.vars.lock().unwrap_or_else(|p| p.into_inner());
        made.iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    vars.get(k)
                        .map_or_else(|| t.clone(), |v| v.as_tensor().clone()),
                )
            })
            .collect()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.tensors().values().map(Tensor::elem_count).sum()
    }

    /// Names in the preset that no constructor asked for (a checkpoint from another network).
    pub fn unused_preset(&self) -> Vec<String> {
        let made = self.inner.made.lock().unwrap_or_else(|p| p.into_inner());
        self.inner
            .preset
            .keys()
            .filter(|k| !made.contains_key(*k))
            .cloned()
            .collect()
    }

    fn fresh(&self, shape: &Shape, name: &str, init: Init) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = Rng::stream(self.inner.seed, &format!("init/{name}"));
        let data: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => rng.uniform_vec(n, lo, up),
            Init::Randn { mean, stdev } => rng
                .normal_vec(n)
                .into_iter()
                .map(|z| (mean + stdev * f64::from(z)) as f32)
                .collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        rng.uniform_vec(n, -bound, bound)
                    }
                    NormalOrUniform::Normal => rng
                        .normal_vec(n)
                        .into_iter()
                        .map(|z| (std * f64::from(z)) as f32)
                        .collect(),
                }
            }
        };
        Tensor::from_vec(data, shape.clone(), &self.device)
    }
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut made = self.inner.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = made.get(name) {
            if t.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} asked for twice with shapes {:?} and {shape:?}",
                    t.shape()
                );
            }
            return Ok(t.clone());
        }
        if self.inner.shapes_only {
            let t = Tensor::zeros((), dtype, dev)?.broadcast_as(shape)?;
            made.insert(name.to_string(), t.clone());
            return Ok(t);
        }
        let value = match self.inner.preset.get(name) {
            Some(t) if t.shape() != &shape => candle_core::bail!(
                "parameter {name}: the checkpoint holds shape {:?} but the model needs {shape:?}; \
                 was it trained with other sizes?",
                t.shape()
            ),
            Some(t) => t.to_device(dev)?.to_dtype(dtype)?,
            None if !self.inner.preset.is_empty() => {
                candle_core::bail!("parameter {name} is missing from the checkpoint")
            }
            None => self.fresh(&shape, name, init)?.to_dtype(dtype)?,
        };
        let tensor = if self.inner.trainable {
            let var = Var::from_tensor(&value)?;
            let t = var.as_tensor().clone();
            self.inner
                .vars
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), var);
            t
        } else {
            value.detach()
        };
        made.insert(name.to_string(), tensor.clone());
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.inner.preset.get(name) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype),
            None => candle_core::bail!("parameter {name} is missing"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.preset.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Init;

    fn values(store: &ParamStore, name: &str) -> Vec<f32> {
        store.tensors()[name]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn init_depends_on_seed_and_name_not_order() {
        let a = ParamStore::seeded(1, &Device::Cpu);
        a.vb()
            .get_with_hints(
                4,
                "x",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        a.vb()
            .get_with_hints(
                4,
                "y",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        let b = ParamStore::seeded(1, &Device::Cpu);
        b.vb()
            .get_with_hints(
                4,
                "y",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        b.vb()
            .get_with_hints(
                4,
                "x",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        assert_eq!(values(&a, "x"), values(&b, "x"));
        assert_ne!(values(&a, "x"), values(&a, "y"));
        let c = ParamStore::seeded(2, &Device::Cpu);
        c.vb()
            .get_with_hints(
                4,
                "x",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        assert_ne!(values(&a, "x"), values(&c, "x"));
        assert_eq!(a.vars().len(), 2);
        assert_eq!(a.count(), 8);
    }

    #[test]
    fn shapes_only_counts_without_memory() {
        let s = ParamStore::shapes_only();
        let t = s
            .vb()
            .get_with_hints((100_000, 100_000), "w", Init::Const(0.))
            .unwrap();
        assert_eq!(t.dims(), &[100_000, 100_000]);
        assert_eq!(s.count(), 10_000_000_000);
    }

    #[test]
    fn uniform_init_respects_bounds() {
        let s = ParamStore::seeded(0, &Device::Cpu);
        s.vb()
            .get_with_hints((50, 40), "w", Init::Uniform { lo: -0.1, up: 0.1 })
            .unwrap();
        let v = values(&s, "w");
        assert!(v.iter().all(|x| (-0.1..0.1).contains(x)));
        assert!(v.iter().any(|x| *x > 0.09) && v.iter().any(|x| *x < -0.09));
    }

    #[test]
    fn preset_values_are_used_and_checked() {
        let t = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let s =
            ParamStore::from_tensors(BTreeMap::from([("a".to_string(), t)]), false, &Device::Cpu);
        let got = s.vb().get_with_hints(3, "a", Init::Const(0.)).unwrap();
        assert_eq!(got.to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
        assert!(s.vars().is_empty(), "frozen parameters are not variables");
        let err = s
            .vb()
            .get_with_hints(3, "b", Init::Const(0.))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parameter b is missing"), "{err}");
        let s2 = ParamStore::from_tensors(s.tensors(), true, &Device::Cpu);
        let err = s2
            .vb()
            .get_with_hints(4, "a", Init::Const(0.))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape"), "{err}");
    }
}
