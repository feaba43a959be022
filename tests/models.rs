//! The networks as functions: shapes through the UNet and autoencoder at several sizes,
//! the attention block's gradient against finite differences, guidance at scale 1, and the
//! conditioners.

use candle_core::{DType, Device, Tensor, Var};
use ldm_run::conditioning::{
    Conditioner, ConditioningConfig, ConditioningKind, PromptTokenizer, Vocabulary,
};
use ldm_run::diffusion::guidance::{Guided, rescale_guided};
use ldm_run::diffusion::samplers::Denoiser;
use ldm_run::models::autoencoder::{AutoencoderConfig, AutoencoderKl};
use ldm_run::models::unet::{UNet, UnetConfig, UnetShape};
use ldm_run::models::vae_blocks::AttnBlock;
use ldm_run::nn::params::ParamStore;
use ldm_run::rng::Rng;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
}

fn small_unet(mult: Vec<usize>, attn: Vec<usize>) -> UnetConfig {
    UnetConfig {
        model_channels: 16,
        channel_mult: mult,
        num_res_blocks: 1,
        attention_resolutions: attn,
        num_heads: 2,
        head_channels: 8,
        context_dim: 12,
        dropout: 0.0,
        norm_groups: 8,
        ..UnetConfig::default()
    }
}

#[test]
fn unet_keeps_the_latent_shape_at_several_sizes() {
    for (side, channels, mult, attn) in [
        (8, 4, vec![1, 2], vec![4]),
        (16, 3, vec![1, 2, 2], vec![8, 4]),
        (4, 4, vec![1], vec![4]),
    ] {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let shape = UnetShape {
            latent_channels: channels,
            latent_size: side,
            context_dim: Some(12),
        };
        let unet = UNet::new(&small_unet(mult, attn), shape, store.vb()).unwrap();
        let x = randn(&[3, channels, side, side], 1);
        let t = Tensor::new(&[0f32, 500., 999.], &Device::Cpu).unwrap();
        let ctx = randn(&[3, 5, 12], 2);
        let y = unet.forward(&x, &t, Some(&ctx), None).unwrap();
        assert_eq!(y.dims(), &[3, channels, side, side]);
        // Unconditional models have no cross-attention.
        let store = ParamStore::seeded(0, &Device::Cpu);
        let shape = UnetShape {
            context_dim: None,
            ..shape
        };
        let unet = UNet::new(&small_unet(vec![1], vec![side]), shape, store.vb()).unwrap();
        assert_eq!(
            unet.forward(&x, &t, None, None).unwrap().dims(),
            &[3, channels, side, side]
        );
    }
}

#[test]
fn unet_uses_each_samples_timestep() {
    let store = ParamStore::seeded(3, &Device::Cpu);
    let shape = UnetShape {
        latent_channels: 4,
        latent_size: 8,
        context_dim: Some(12),
    };
    let unet = UNet::new(&small_unet(vec![1, 2], vec![4]), shape, store.vb()).unwrap();
    let x = randn(&[1, 4, 8, 8], 1).repeat((2, 1, 1, 1)).unwrap();
    let ctx = randn(&[1, 5, 12], 2).repeat((2, 1, 1)).unwrap();
    let y = unet
        .forward(
            &x,
            &Tensor::new(&[10f32, 900.], &Device::Cpu).unwrap(),
            Some(&ctx),
            None,
        )
        .unwrap();
    let diff: f32 = (y.get(0).unwrap() - y.get(1).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff > 1e-3,
        "same input, different timesteps must differ: {diff}"
    );
}

#[test]
fn autoencoder_maps_images_to_latents_and_back() {
    let cfg = AutoencoderConfig {
        ch: 8,
        ch_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![8],
        norm_groups: 4,
        ..AutoencoderConfig::default()
    };
    for channels in [1, 3] {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let vae = AutoencoderKl::new(&cfg, channels, 32, store.vb()).unwrap();
        let x = randn(&[2, channels, 32, 32], 4);
        let post = vae.encode(&x, None).unwrap();
        assert_eq!(post.mean.dims(), &[2, 4, 8, 8]);
        let z = post.sample(&mut Rng::new(0)).unwrap();
        assert_eq!(vae.decode(&z, None).unwrap().dims(), &[2, channels, 32, 32]);
        assert!(post.kl().unwrap().to_scalar::<f32>().unwrap() >= 0.0);
    }
}

#[test]
fn attention_block_gradient_matches_finite_differences() {
    let store = ParamStore::seeded(7, &Device::Cpu);
    let block = AttnBlock::new(4, 2, store.vb()).unwrap();
    let x0: Vec<f32> = Rng::new(1).normal_vec(4 * 3 * 3);
    let weights = randn(&[1, 4, 3, 3], 9);
    let loss_of = |x: &Tensor| {
        block
            .forward(x)
            .unwrap()
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let x = Var::from_tensor(&Tensor::from_vec(x0.clone(), (1, 4, 3, 3), &Device::Cpu).unwrap())
        .unwrap();
    let grads = loss_of(x.as_tensor()).backward().unwrap();
    let analytic: Vec<f32> = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Central differences in f64 through the stock path (f64 is not on the fast kernels).
    let eps = 1e-4;
    let store64 = ParamStore::from_tensors(
        store
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(DType::F64).unwrap()))
            .collect(),
        false,
        &Device::Cpu,
    );
    let block64 = AttnBlock::new(4, 2, store64.vb().set_dtype(DType::F64)).unwrap();
    let w64 = weights.to_dtype(DType::F64).unwrap();
    let f = |v: &[f64]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), (1, 4, 3, 3), &Device::Cpu).unwrap();
        block64
            .forward(&t)
            .unwrap()
            .mul(&w64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let base: Vec<f64> = x0.iter().map(|&v| f64::from(v)).collect();
    for (i, a) in analytic.iter().enumerate() {
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (f(&up) - f(&down)) / (2.0 * eps);
        assert!(
            (f64::from(*a) - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
            "x[{i}]: {a} vs {numeric}"
        );
    }
}

#[test]
fn guidance_at_scale_one_is_the_conditional_prediction() {
    let store = ParamStore::seeded(0, &Device::Cpu);
    let shape = UnetShape {
        latent_channels: 4,
        latent_size: 8,
        context_dim: Some(12),
    };
    let unet = UNet::new(&small_unet(vec![1, 2], vec![4]), shape, store.vb()).unwrap();
    let x = randn(&[2, 4, 8, 8], 1);
    let cond = randn(&[2, 3, 12], 2);
    let uncond = randn(&[2, 3, 12], 3);
    let t = Tensor::new(&[250f32, 250.], &Device::Cpu).unwrap();
    let plain = unet.forward(&x, &t, Some(&cond), None).unwrap();
    let guided = Guided {
        unet: &unet,
        cond: Some(cond.clone()),
        uncond: Some(uncond.clone()),
        scale: 1.0,
        rescale: 0.0,
    };
    let g1 = guided.predict(&x, 250.0).unwrap();
    assert_eq!(
        g1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        plain.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // Scale 3 moves away from the unconditional prediction: out_u + 3 (out_c - out_u).
    let g3 = Guided {
        scale: 3.0,
        ..guided
    }
    .predict(&x, 250.0)
    .unwrap();
    let u = unet.forward(&x, &t, Some(&uncond), None).unwrap();
    let want = (&u + ((&plain - &u).unwrap() * 3.0).unwrap()).unwrap();
    let max_err = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let err = max_err(&g3, &want);
    assert!(err < 1e-4, "{err}");
    // Guidance rescale acts on the guided output with the conditional one's spread.
    let rescaled = Guided {
        unet: &unet,
        cond: Some(cond),
        uncond: Some(uncond),
        scale: 3.0,
        rescale: 0.7,
    }
    .predict(&x, 250.0)
    .unwrap();
    let err = max_err(&rescaled, &rescale_guided(&want, &plain, 0.7).unwrap());
    assert!(err < 1e-4, "{err}");
}

#[test]
fn conditioners_give_contexts_and_null_contexts() {
    let names: Vec<String> = ["zero", "one", "two"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let vocab = PromptTokenizer::Classes(Vocabulary::for_classes(&names, 3));
    let prompts = [Some("one"), Some("2"), None];
    for (kind, tokens) in [(ConditioningKind::Text, 3), (ConditioningKind::Class, 1)] {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let cfg = ConditioningConfig {
            kind,
            heads: 2,
            ..ConditioningConfig::default()
        };
        let cond = Conditioner::new(&cfg, &vocab, 8, store.vb()).unwrap();
        let ctx = cond
            .context(&vocab, &prompts, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(ctx.dims(), &[3, tokens, 8], "{kind:?}");
        // "two" and "2" are the same class: the class table gives the same context.
        if kind == ConditioningKind::Class {
            let a = cond
                .context(&vocab, &[Some("two")], &Device::Cpu)
                .unwrap()
                .unwrap();
            let b = cond
                .context(&vocab, &[Some("2")], &Device::Cpu)
                .unwrap()
                .unwrap();
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        assert!(
            cond.context(&vocab, &[Some("three")], &Device::Cpu)
                .is_err()
        );
    }
    let store = ParamStore::seeded(0, &Device::Cpu);
    let cfg = ConditioningConfig {
        kind: ConditioningKind::None,
        ..ConditioningConfig::default()
    };
    let none = Conditioner::new(&cfg, &vocab, 8, store.vb()).unwrap();
    assert!(
        none.context(&vocab, &prompts, &Device::Cpu)
            .unwrap()
            .is_none()
    );
}
