//! `ldm-run bench`: the experiment's own networks timed the way `../shared/bench/
//! torch_reference.py` times the PyTorch reference (training step = forward, backward, grad-norm
//! clip and Adam step; sampling = one forward pass), printed in the same line format. Medians
//! over several steps after warm-up.

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};

use crate::config::Resolved;
use crate::diffusion::objective::q_sample;
use crate::models::autoencoder::AutoencoderKl;
use crate::models::unet::UNet;
use crate::nn::params::ParamStore;
use crate::parallel;
use crate::rng::Rng;
use crate::train::adam::Adam;
use crate::train::clip::{clip_scale, global_norm};

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub vae_batch: usize,
    pub unet_batch: usize,
    /// Context tokens of the UNet's cross-attention (the reference: CLIP's 77).
    pub tokens: Option<usize>,
    pub steps: usize,
    pub warmup: usize,
    pub skip_vae: bool,
    pub skip_unet: bool,
}

/// The median of `samples` (ms).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Times `f` `warmup + steps` times; returns the line in the reference's format. Each step
/// waits for `dev` to finish its queued work (a GPU runs asynchronously), so it is timed whole.
fn timed(
    name: &str,
    items: usize,
    args: &BenchArgs,
    dev: &Device,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    for _ in 0..args.warmup {
        f()?;
        dev.synchronize()?;
    }
    let mut ms = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let m = median(&mut ms);
    Ok(format!(
        "{name}: {m:.1} ms/step  ({:.1}/s)",
        items as f64 / (m / 1e3)
    ))
}

fn random(shape: &[usize], rng: &mut Rng, dev: &Device) -> anyhow::Result<Tensor> {
    let n = shape.iter().product();
    Ok(Tensor::from_vec(rng.normal_vec(n), shape, dev)?)
}

/// Runs the benchmarks, printing each line as it is measured.
pub fn run(resolved: &Resolved, args: &BenchArgs, dev: &Device) -> anyhow::Result<Vec<String>> {
    let e = &resolved.experiment;
    let mut rng = Rng::new(0);
    let mut lines = Vec::new();
    let mut emit = |line: String| {
        let _ = super::print_out(&format!("{line}\n"));
        lines.push(line);
    };
    super::print_out(&format!(
        "threads: {} (one batch shard each)\n",
        parallel::shard_count()
    ))?;
    super::print_out(&format!("{}\n", crate::nn::cpu::summary()))?;
    if !args.skip_vae {
        let (c, s) = (e.dataset.channels, e.dataset.image_size);
        let store = ParamStore::seeded(0, dev);
        let vae = AutoencoderKl::new(&e.autoencoder, c, s, store.vb())?;
        super::print_out(&format!(
            "vae params: {}\n",
            super::plan::thousands(store.count())
        ))?;
        let b = args.vae_batch;
        let x = Tensor::from_vec(rng.uniform_vec(b * c * s * s, -1.0, 1.0), (b, c, s, s), dev)?;
        let mut opt = Adam::new([0.5, 0.9], 0.0);
        let mut noise = Rng::new(1);
        emit(timed(
            &format!("vae train step b{b}"),
            b,
            args,
            dev,
            || {
                let shards = parallel::shards(b, dev);
                let noises = noise.children(shards.len());
                let vars = store.vars();
                let (grads, _) = parallel::grads(&vars, &shards, |i, r| -> anyhow::Result<_> {
                    let x = x.narrow(0, r.start, r.len())?;
                    let post = vae.encode(&x, None)?;
                    let x_hat = vae.decode(&post.sample(&mut noises[i].clone())?, None)?;
                    let share = r.len() as f64 / b as f64;
                    let rec = ((&x - &x_hat)?.abs()?.sum_all()? / b as f64)?;
                    Ok(vec![(rec + (post.kl()? * (1e-6 * share))?)?])
                })?;
                let norm = global_norm(&vars, &grads)?;
                opt.step(&vars, &grads, 4.5e-6, clip_scale(norm, 1.0))?;
                Ok(())
            },
        )?);
    }
    if !args.skip_unet {
        let latent = e.latent();
        let (zc, side) = (latent.channels, latent.side);
        let shape = e.unet_shape();
        let conditional = shape.context_dim.is_some();
        let store = ParamStore::seeded(0, dev);
        let unet = UNet::new(&e.unet, shape, store.vb())?;
        super::print_out(&format!(
            "unet params: {}\n",
            super::plan::thousands(store.count())
        ))?;
        let b = args.unet_batch;
        let tokens = args.tokens.unwrap_or(e.conditioning.max_tokens);
        let z = random(&[b, zc, side, side], &mut rng, dev)?;
        let ctx = conditional
            .then(|| random(&[b, tokens, e.unet.context_dim], &mut rng, dev))
            .transpose()?;
        let schedule = e.schedule.noise_schedule();
        let mut opt = Adam::new([0.9, 0.99], 0.0);
        let mut r = Rng::new(2);
        let mut dropout = Rng::new(3);
        emit(timed(
            &format!("unet train step b{b}"),
            b,
            args,
            dev,
            || {
                let t: Vec<usize> = (0..b).map(|_| r.below(schedule.timesteps())).collect();
                let eps = random(&[b, zc, side, side], &mut r, dev)?;
                let x_t = q_sample(&schedule, &z, &t, &eps)?;
                let tt = Tensor::from_vec(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), b, dev)?;
                let shards = parallel::shards(b, dev);
                let drops = dropout.children(shards.len());
                let vars = store.vars();
                let (grads, _) = parallel::grads(&vars, &shards, |i, r| -> anyhow::Result<_> {
                    let part = |t: &Tensor| t.narrow(0, r.start, r.len());
                    let c = ctx.as_ref().map(part).transpose()?;
                    let mut rng = drops[i].clone();
                    let out =
                        unet.forward(&part(&x_t)?, &part(&tt)?, c.as_ref(), Some(&mut rng))?;
                    Ok(vec![
                        ((out - part(&eps)?)?.sqr()?.sum_all()? / eps.elem_count() as f64)?,
                    ])
                })?;
                let norm = global_norm(&vars, &grads)?;
                opt.step(&vars, &grads, 2e-4, clip_scale(norm, 1.0))?;
                Ok(())
            },
        )?);
        let frozen = ParamStore::from_tensors(store.tensors(), false, dev);
        let unet = UNet::new(&e.unet, shape, frozen.vb()).context("frozen UNet")?;
        emit(timed(
            &format!("unet sample forward b{b}"),
            b,
            args,
            dev,
            || {
                let t = Tensor::from_vec(vec![r.below(schedule.timesteps()) as f32; b], b, dev)?
                    .to_dtype(DType::F32)?;
                parallel::batched(b, dev, |r| {
                    let part = |t: &Tensor| t.narrow(0, r.start, r.len());
                    let c = ctx.as_ref().map(part).transpose()?;
                    unet.forward(&part(&z)?, &part(&t)?, c.as_ref(), None)
                })?;
                Ok(())
            },
        )?);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
