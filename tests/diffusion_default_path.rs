//! The default diffusion path pinned bit for bit: DDIM (linspace timesteps, any eta), ancestral
//! DDPM and the training tensors (q_sample, epsilon and v targets, Min-SNR weights) must keep
//! producing exactly the numbers they produced when these fingerprints were taken, so that the
//! shipped experiments' results and the resume tests stay valid through any refactor.

use candle_core::{Device, Result, Tensor};
use ldm_run::diffusion::objective::{Prediction, min_snr_weights, q_sample, target};
use ldm_run::diffusion::samplers::{Denoiser, SamplerConfig, SamplerKind, Sigmas, Spacing, sample};
use ldm_run::diffusion::schedule::BetaSchedule;
use ldm_run::diffusion::schedule::NoiseSchedule;
use ldm_run::rng::Rng;

/// FNV-1a over the f32 bit patterns of a tensor's values.
fn fingerprint(t: &Tensor) -> u64 {
    let values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        v.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// A nonlinear stand-in for the network whose output depends on both x_t and t.
struct Toy {
    timesteps: usize,
}

impl Denoiser for Toy {
    fn predict(&self, x_t: &Tensor, t: f64) -> Result<Tensor> {
        let gain = 0.5 + 0.4 * t / self.timesteps as f64;
        (x_t.tanh()? * gain)? + (x_t.sin()? * 0.1)?
    }
}

fn noise(rng: &mut Rng) -> Tensor {
    Tensor::from_vec(rng.normal_vec(2 * 3 * 4 * 4), (2, 3, 4, 4), &Device::Cpu).unwrap()
}

#[test]
fn default_samplers_are_pinned_bit_for_bit() {
    let linear = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
    let scaled = NoiseSchedule::new(BetaSchedule::ScaledLinear, 1000, 0.00085, 0.012);
    let cosine = NoiseSchedule::new(BetaSchedule::Cosine, 100, 0.0, 0.0);
    let cases = [
        (&linear, SamplerKind::Ddim, 10, 0.0, Prediction::Epsilon),
        (&linear, SamplerKind::Ddim, 7, 0.5, Prediction::V),
        (&scaled, SamplerKind::Ddim, 50, 1.0, Prediction::Epsilon),
        (&linear, SamplerKind::Ddpm, 50, 0.0, Prediction::Epsilon),
        (&cosine, SamplerKind::Ddpm, 50, 0.0, Prediction::V),
    ];
    let mut got = Vec::new();
    for (i, (schedule, kind, steps, eta, prediction)) in cases.into_iter().enumerate() {
        let timesteps = schedule.timesteps();
        let cfg = SamplerConfig {
            kind,
            steps,
            eta,
            spacing: Spacing::Linspace,
            sigmas: Sigmas::Schedule,
            prediction,
        };
        let mut rng = Rng::new(10 + i as u64);
        let x_t = noise(&mut rng);
        let sampled = sample(&Toy { timesteps }, schedule, cfg, x_t, &mut rng).unwrap();
        let expected_nfe = if kind == SamplerKind::Ddpm {
            timesteps
        } else {
            steps
        };
        assert_eq!(sampled.nfe, expected_nfe, "case {i}");
        let x0 = sampled.x;
        let values: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "case {i}: {values:?}");
        got.push((fingerprint(&x0), rng.next_u64()));
    }
    let pinned: [(u64, u64); 5] = [
        (10058355494045815739, 11508775795183919522),
        (13431215708013428797, 13105460742377567005),
        (3556415316497806765, 14155783283063480903),
        (18421222496408381937, 3415277421516920795),
        (15968147891359583763, 4096000678753182638),
    ];
    assert_eq!(got, pinned, "the default samplers' numbers changed");
}

#[test]
fn default_training_tensors_are_pinned_bit_for_bit() {
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
    let mut rng = Rng::new(3);
    let x0 = noise(&mut rng);
    let eps = noise(&mut rng);
    let t = [0, 999];
    let x_t = q_sample(&schedule, &x0, &t, &eps).unwrap();
    assert!(
        x_t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );
    let mut got = vec![fingerprint(&x_t)];
    for prediction in [Prediction::Epsilon, Prediction::V] {
        got.push(fingerprint(
            &target(prediction, &schedule, &x0, &t, &eps).unwrap(),
        ));
        let w = min_snr_weights(prediction, &schedule, &[0, 500, 999], 5.0, &Device::Cpu).unwrap();
        got.push(fingerprint(&w));
    }
    let pinned: [u64; 5] = [
        14744032328391703205,
        3202412107053700945,
        7856254909086395121,
        7609181162431843065,
        1994024642082991712,
    ];
    assert_eq!(got, pinned, "the training tensors' numbers changed");
}
