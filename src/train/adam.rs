//! Adam (Kingma and Ba 2015) with decoupled weight decay (Loshchilov and Hutter 2019), whose
//! moments and step count are kept by parameter name so a checkpoint can hold them (candle's
//! own AdamW keeps them private).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

use super::adam_fused::{self, Hyper};
use crate::nn::kernels::with_slice;
use crate::parallel;

/// Adam state: step count and the two moments of every parameter that has had a gradient.
#[derive(Debug, Clone)]
pub struct Adam {
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

impl Adam {
    pub fn new(betas: [f64; 2], weight_decay: f64) -> Self {
        Self {
            betas,
            eps: 1e-8,
            weight_decay,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every variable that has a gradient (the variables split over the cores,
    /// f32 on the CPU in one pass over memory each), with learning rate `lr` and the
    /// gradients multiplied by `grad_scale` (gradient clipping). Parameters without a gradient
    /// (unused layers) are left alone, as PyTorch does.
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.step += 1;
        let [b1, b2] = self.betas;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let with_grad: Vec<(&String, &Var, Tensor)> = vars
            .iter()
            .filter_map(|(name, var)| {
                // candle leaves a variable's gradient attached to the forward graph when it
                // was built from tracked tensors (e.g. a matmul with the layer's input); kept
                // in the moments, it would hold every step's activations alive.
                grads.get(var.as_tensor()).map(|g| (name, var, g.detach()))
            })
            .collect();
        let Some(device) = with_grad.first().map(|(_, v, _)| v.device().clone()) else {
            return Ok(());
        };
        let size = |(_, _, g): &(&String, &Var, Tensor)| g.elem_count();
        let hyper = Hyper {
            b1,
            b2,
            eps: self.eps,
            lr,
            bc1,
            bc2,
            weight_decay: self.weight_decay,
            grad_scale,
        };
        let updated = parallel::map_balanced(&with_grad, size, &device, |(name, var, g)| {
            let (m, v) = (self.m.get(*name), self.v.get(*name));
            if fused_applies(var.as_tensor(), g, m, v) {
                fused(var.as_tensor(), g, m.zip(v), &hyper)
            } else {
                composed(var.as_tensor(), g, m.zip(v), &hyper)
            }
        })?;
        for ((name, var, _), (p, m, v)) in with_grad.iter().zip(updated) {
            var.set(&p)?;
            self.m.insert((*name).clone(), m);
            self.v.insert((*name).clone(), v);
        }
        Ok(())
    }

    /// The moments as named tensors (`m/<param>`, `v/<param>`), for a checkpoint.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let m = self.m.iter().map(|(k, t)| (format!("m/{k}"), t.clone()));
        let v = self.v.iter().map(|(k, t)| (format!("v/{k}"), t.clone()));
        m.chain(v).collect()
    }

    /// Restores moments saved by [`Adam::state_tensors`] and the step count.
    pub fn restore(&mut self, step: u64, tensors: &BTreeMap<String, Tensor>) {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (k, t) in tensors {
            if let Some(name) = k.strip_prefix("m/") {
                self.m.insert(name.to_string(), t.clone());
            } else if let Some(name) = k.strip_prefix("v/") {
                self.v.insert(name.to_string(), t.clone());
            }
        }
    }
}

/// Whether the single-pass CPU update applies: f32 on the CPU throughout.
fn fused_applies(p: &Tensor, g: &Tensor, m: Option<&Tensor>, v: Option<&Tensor>) -> bool {
    [Some(p), Some(g), m, v]
        .into_iter()
        .flatten()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// (p', m', v') in one pass over memory ([`adam_fused`]).
fn fused(
    p: &Tensor,
    g: &Tensor,
    mv: Option<(&Tensor, &Tensor)>,
    h: &Hyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (p, g) = (p.contiguous()?, g.contiguous()?);
    let (p2, m2, v2) = with_slice(&p, "adam", |ps| {
        with_slice(&g, "adam", |gs| match mv {
            Some((m, v)) => with_slice(m, "adam", |ms| {
                with_slice(v, "adam", |vs| {
                    adam_fused::update(ps, gs, Some(ms), Some(vs), h)
                })
            })?,
            None => Ok(adam_fused::update(ps, gs, None, None, h)),
        })?
    })??;
    let t = |d: Vec<f32>| Tensor::from_vec(d, p.shape(), p.device());
    Ok((t(p2)?, t(m2)?, t(v2)?))
}

/// (p', m', v') from candle ops, for any device and dtype.
fn composed(
    p: &Tensor,
    g: &Tensor,
    mv: Option<(&Tensor, &Tensor)>,
    h: &Hyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = if h.grad_scale == 1.0 {
        g.clone()
    } else {
        (g * h.grad_scale)?
    };
    let (m, v) = match mv {
        Some((m, v)) => (
            ((m * h.b1)? + (&g * (1.0 - h.b1))?)?,
            ((v * h.b2)? + (g.sqr()? * (1.0 - h.b2))?)?,
        ),
        None => ((&g * (1.0 - h.b1))?, (g.sqr()? * (1.0 - h.b2))?),
    };
    // PyTorch's form: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
    let denom = ((v.sqrt()? / h.bc2.sqrt())? + h.eps)?;
    let update = (m.div(&denom)? * (h.lr / h.bc1))?;
    let decayed = if h.weight_decay > 0.0 {
        (p * (1.0 - h.lr * h.weight_decay))?
    } else {
        p.clone()
    };
    Ok((decayed.sub(&update)?, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_steps_match_the_adam_formula() {
        // f(p) = sum(p^2)/2, grad = p. Hand-computed with lr 0.1, betas (0.9, 0.999).
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let vars = vec![("p".to_string(), p.clone())];
        let mut opt = Adam::new([0.9, 0.999], 0.0);
        let loss = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        opt.step(&vars, &loss.backward().unwrap(), 0.1, 1.0)
            .unwrap();
        // Step 1: m_hat = g, v_hat = g^2, update = lr * sign(g) (up to eps).
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6,
            "{v:?}"
        );
        let loss = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        opt.step(&vars, &loss.backward().unwrap(), 0.1, 1.0)
            .unwrap();
        // Step 2 for p0: g1 = 1, g2 = 0.9.
        let m = 0.9 * 0.1 * 1.0 + 0.1 * 0.9;
        let vv = 0.999 * 0.001 * 1.0 + 0.001 * 0.81;
        let expected = 0.9 - 0.1 * (m / (1.0 - 0.81)) / ((vv / (1.0 - 0.998_001f64)).sqrt() + 1e-8);
        let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn moments_hold_no_graph() {
        // d(sum(p * a^2))/dp = a^2, a tensor candle keeps attached to the graph through `a`.
        let p = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let a = Var::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let loss = (p.as_tensor() * a.as_tensor().sqr().unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(p.as_tensor()).unwrap().track_op());
        let mut opt = Adam::new([0.9, 0.999], 0.0);
        let vars = vec![("p".to_string(), p.clone())];
        opt.step(&vars, &grads, 0.1, 0.5).unwrap();
        opt.step(&vars, &grads, 0.1, 1.0).unwrap();
        for (name, t) in opt.state_tensors() {
            assert!(!t.track_op(), "{name} is attached to a graph");
        }
    }

    #[test]
    fn state_round_trips() {
        let p = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), p.clone())];
        let mut a = Adam::new([0.5, 0.9], 0.01);
        let loss = p.as_tensor().sqr().unwrap().sum_all().unwrap();
        a.step(&vars, &loss.backward().unwrap(), 0.01, 0.5).unwrap();
        let mut b = Adam::new([0.5, 0.9], 0.01);
        b.restore(a.step, &a.state_tensors());
        let q = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        q.set(p.as_tensor()).unwrap();
        let vars_q = vec![("w".to_string(), q.clone())];
        let lp = p.as_tensor().sqr().unwrap().sum_all().unwrap();
        let lq = q.as_tensor().sqr().unwrap().sum_all().unwrap();
        a.step(&vars, &lp.backward().unwrap(), 0.01, 1.0).unwrap();
        b.step(&vars_q, &lq.backward().unwrap(), 0.01, 1.0).unwrap();
        assert_eq!(
            p.as_tensor().to_vec1::<f32>().unwrap(),
            q.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn fused_and_composed_updates_agree() {
        let dev = Device::Cpu;
        let t = |seed: f32| {
            let v: Vec<f32> = (0..257).map(|i| (i as f32 * seed).sin()).collect();
            Tensor::from_vec(v, (257,), &dev).unwrap()
        };
        let (p, g, m) = (t(0.3), t(0.7), (t(0.11) * 0.1).unwrap());
        let v = (t(0.23).abs().unwrap() * 0.05).unwrap();
        let h = Hyper {
            b1: 0.5,
            b2: 0.9,
            eps: 1e-8,
            lr: 0.01,
            bc1: 0.75,
            bc2: 0.19,
            weight_decay: 0.1,
            grad_scale: 0.5,
        };
        for mv in [None, Some((&m, &v))] {
            assert!(fused_applies(&p, &g, Some(&m), Some(&v)));
            let a = fused(&p, &g, mv, &h).unwrap();
            let b = composed(&p, &g, mv, &h).unwrap();
            for (x, y) in [(a.0, b.0), (a.1, b.1), (a.2, b.2)] {
                let d = (x - y).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
            }
        }
        assert!(!fused_applies(
            &p.to_dtype(DType::F64).unwrap(),
            &g,
            None,
            None
        ));
    }
}
