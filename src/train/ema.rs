//! Exponential moving average of weights, used for sampling, with the warm-up of the latent
//! diffusion reference code: decay_n = min(decay, (1 + n) / (10 + n)).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};

use crate::parallel;

#[derive(Debug, Clone)]
pub struct Ema {
    pub decay: f64,
    pub updates: u64,
    pub shadow: BTreeMap<String, Tensor>,
}

/// The decay used at update number `n` (0-based).
pub fn warm_decay(decay: f64, n: u64) -> f64 {
    decay.min((1.0 + n as f64) / (10.0 + n as f64))
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(decay: f64, vars: &[(String, Var)]) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?.detach())))
            .collect::<Result<_>>()?;
        Ok(Self {
            decay,
            updates: 0,
            shadow,
        })
    }

    /// Moves the average towards the current weights (the variables split over the cores).
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        let d = warm_decay(self.decay, self.updates);
        if let Some(device) = vars.first().map(|(_, v)| v.device().clone()) {
            let size = |(_, v): &(String, Var)| v.elem_count();
            let next = parallel::map_balanced(vars, size, &device, |(name, var)| {
                let p = var.as_tensor().detach();
                match self.shadow.get(name) {
                    Some(s) => (s * d)? + (p * (1.0 - d))?,
                    None => p.copy(),
                }
            })?;
            for ((name, _), t) in vars.iter().zip(next) {
                self.shadow.insert(name.clone(), t);
            }
        }
        self.updates += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn decay_warms_up() {
        assert!((warm_decay(0.999, 0) - 0.1).abs() < 1e-12);
        assert!((warm_decay(0.999, 10) - 11.0 / 20.0).abs() < 1e-12);
        assert_eq!(warm_decay(0.999, 1_000_000), 0.999);
    }

    #[test]
    fn average_follows_the_weights() {
        let w = Var::new(&[0.0f32], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), w.clone())];
        let mut ema = Ema::new(0.5, &vars).unwrap();
        w.set(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&vars).unwrap(); // d = 0.1 -> 0.9
        ema.update(&vars).unwrap(); // d = 2/11 -> 0.9 * 2/11 + 9/11
        let v = ema.shadow["w"].to_vec1::<f32>().unwrap()[0];
        assert!(
            (f64::from(v) - (0.9 * 2.0 / 11.0 + 9.0 / 11.0)).abs() < 1e-6,
            "{v}"
        );
    }
}
