//! A network's parameters together with what trains them: Adam, gradient clipping and an
//! optional EMA of the weights. One update, one checkpoint layout and one restore for every
//! training stage.
//!
//! In a checkpoint a network called `name` keeps its weights under `name/`, Adam's moments under
//! `name_opt/` and the EMA under `name_ema/`; its step counters are `name_adam_step` and
//! `name_ema_updates` in the state.

use std::collections::BTreeMap;

use anyhow::Context;
use candle_core::Tensor;
use candle_core::backprop::GradStore;

use super::adam::Adam;
use super::checkpoint::{Checkpoint, with_prefix};
use super::clip::{clip_scale, global_norm};
use super::ema::Ema;
use super::settings::TrainSettings;
use crate::nn::params::ParamStore;

pub struct Optimized {
    pub store: ParamStore,
    pub opt: Adam,
    pub ema: Option<Ema>,
    grad_clip: f64,
}

impl Optimized {
    /// Trains `store` with the settings of `train`; `ema_decay` > 0 keeps an EMA.
    pub fn new(
        store: ParamStore,
        train: &TrainSettings,
        ema_decay: f64,
    ) -> candle_core::Result<Self> {
        let ema = (ema_decay > 0.0)
            .then(|| Ema::new(ema_decay, &store.vars()))
            .transpose()?;
        Ok(Self {
            opt: Adam::new(train.betas, train.weight_decay),
            ema,
            grad_clip: train.grad_clip,
            store,
        })
    }

    /// Clips the gradients' global norm, takes an Adam step at `lr` and updates the EMA.
    /// Returns the norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<f64> {
        let vars = self.store.vars();
        let norm = global_norm(&vars, grads)?;
        self.opt
            .step(&vars, grads, lr, clip_scale(norm, self.grad_clip))?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&vars)?;
        }
        Ok(norm)
    }

    /// The weights to sample or judge with: the EMA when kept, else the current ones.
    pub fn eval_weights(&self) -> BTreeMap<String, Tensor> {
        match &self.ema {
            Some(ema) => ema.shadow.clone(),
            None => self.store.tensors(),
        }
    }

    /// Adds this network to `ckpt` under `name`.
    pub fn save(&self, name: &str, ckpt: &mut Checkpoint) {
        let (tensors, state) = (&mut ckpt.tensors, &mut ckpt.state);
        with_prefix(tensors, name, self.store.tensors());
        with_prefix(tensors, &format!("{name}_opt"), self.opt.state_tensors());
        state[format!("{name}_adam_step")] = self.opt.step.into();
        if let Some(ema) = &self.ema {
            with_prefix(tensors, &format!("{name}_ema"), ema.shadow.clone());
            state[format!("{name}_ema_updates")] = ema.updates.into();
        }
    }

    /// Restores what [`Optimized::save`] wrote under `name`.
    pub fn restore(&mut self, name: &str, ckpt: &Checkpoint) -> anyhow::Result<()> {
        let counter = |key: String| {
            ckpt.state[&key]
                .as_u64()
                .with_context(|| format!("the checkpoint has no {key}"))
        };
        set_vars(&self.store, &ckpt.group(name)).with_context(|| format!("{name} weights"))?;
        self.opt.restore(
            counter(format!("{name}_adam_step"))?,
            &ckpt.group(&format!("{name}_opt")),
        );
        if let Some(ema) = self.ema.as_mut() {
            ema.shadow = ckpt.group(&format!("{name}_ema"));
            ema.updates = counter(format!("{name}_ema_updates"))?;
        }
        Ok(())
    }
}

/// Overwrites every variable of `store` with the tensor of the same name.
pub fn set_vars(store: &ParamStore, tensors: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
    for (name, var) in store.vars() {
        let t = tensors
            .get(&name)
            .with_context(|| format!("the checkpoint has no tensor {name}"))?;
        var.set(t).with_context(|| format!("tensor {name}"))?;
    }
    Ok(())
}
