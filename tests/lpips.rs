//! LPIPS: the perceptual distance on known inputs and its gradient, clear errors for missing or
//! wrong weights, and an autoencoder stage trained with the perceptual term (weights from a
//! local file; random weights of the right shapes stand in for the real ones).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use common::{ldm_run, text};
use ldm_run::models::lpips::{BLOCKS, Lpips};
use ldm_run::rng::Rng;

/// Writes a weights file with random (non-negative) tensors of LPIPS's names and shapes.
fn random_weights(path: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut map = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32| {
        let v: Vec<f32> = rng
            .normal_vec(shape.iter().product())
            .iter()
            .map(|x| x.abs() * scale)
            .collect();
        map.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    };
    for (k, block) in BLOCKS.iter().enumerate() {
        for &(i, c_in, c_out) in block.iter() {
            let s = (2.0 / (9 * c_in) as f32).sqrt();
            put(format!("features.{i}.weight"), &[c_out, c_in, 3, 3], s);
            put(format!("features.{i}.bias"), &[c_out], 0.01);
        }
        let c = block[block.len() - 1].2;
        put(format!("lin{k}.model.1.weight"), &[1, c, 1, 1], 0.1);
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

fn images(seed: u64, b: usize) -> Tensor {
    let mut rng = Rng::new(seed);
    let v = rng.uniform_vec(b * 16 * 16, -1.0, 1.0);
    Tensor::from_vec(v, (b, 1, 16, 16), &Device::Cpu).unwrap()
}

fn loaded() -> (tempfile::TempDir, Lpips) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lpips.safetensors");
    random_weights(&path, 5);
    let net = Lpips::open(&path, &Device::Cpu)
        .and_then(|f| Lpips::load(&f))
        .unwrap();
    (dir, net)
}

#[test]
fn identical_images_are_at_zero_and_others_are_not() {
    let (_dir, net) = loaded();
    let (a, b) = (images(1, 2), images(2, 2));
    let same: Vec<f32> = net.distance(&a, &a).unwrap().to_vec1().unwrap();
    assert_eq!(same, vec![0.0, 0.0]);
    let ab: Vec<f32> = net.distance(&a, &b).unwrap().to_vec1().unwrap();
    let ba: Vec<f32> = net.distance(&b, &a).unwrap().to_vec1().unwrap();
    assert!(ab.iter().all(|d| *d > 0.0 && d.is_finite()), "{ab:?}");
    for (x, y) in ab.iter().zip(&ba) {
        assert!((x - y).abs() < 1e-6, "symmetric: {ab:?} vs {ba:?}");
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let (_dir, net) = loaded();
    let a = images(3, 1);
    let b0: Vec<f32> = images(4, 1).flatten_all().unwrap().to_vec1().unwrap();
    let dist = |v: &[f32]| -> f64 {
        let b = Tensor::from_vec(v.to_vec(), (1, 1, 16, 16), &Device::Cpu).unwrap();
        let d: Vec<f32> = net.distance(&a, &b).unwrap().to_vec1().unwrap();
        f64::from(d[0])
    };
    let var =
        Var::from_tensor(&Tensor::from_vec(b0.clone(), (1, 1, 16, 16), &Device::Cpu).unwrap())
            .unwrap();
    let d = net
        .distance(&a, var.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = d.backward().unwrap();
    let grad: Vec<f32> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let eps = 1e-2;
    for i in [0, 37, 120, 255] {
        let (mut up, mut down) = (b0.clone(), b0.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (dist(&up) - dist(&down)) / (2.0 * f64::from(eps));
        let analytic = f64::from(grad[i]);
        assert!(
            (numeric - analytic).abs() <= 0.05 * numeric.abs().max(analytic.abs()) + 1e-4,
            "pixel {i}: {numeric} vs {analytic}"
        );
    }
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    let zeros = |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu);
    let map = HashMap::from([(
        "features.0.weight".to_string(),
        zeros(&[64, 3, 3, 3]).unwrap(),
    )]);
    candle_core::safetensors::save(&map, &path).unwrap();
    let err = Lpips::open(&path, &Device::Cpu)
        .and_then(|f| Lpips::load(&f))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no tensor `features.0.bias`"), "{err}");
    assert!(err.contains("partial.safetensors"), "{err}");

    let map = HashMap::from([(
        "features.0.weight".to_string(),
        zeros(&[64, 1, 3, 3]).unwrap(),
    )]);
    candle_core::safetensors::save(&map, &path).unwrap();
    let err = Lpips::open(&path, &Device::Cpu)
        .and_then(|f| Lpips::load(&f))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`features.0.weight` has shape [64, 1, 3, 3], expected [64, 3, 3, 3]"),
        "{err}"
    );
}

const EXPERIMENT: &str = r#"
[experiment]
name = "lpips"
seed = 0

[dataset]
name = "mnist"
train_limit = 64

[autoencoder]
ch = 16
ch_mult = [1, 2, 2]
num_res_blocks = 1
attn_resolutions = []
norm_groups = 8

[stages.vae]
kind = "autoencoder"
steps = 3
batch_size = 4
lr = 1e-3
perceptual_weight = 1.0
lpips_weights = "weights/lpips.safetensors"
eval_images = 8

[logging]
log_every = 1
"#;

#[test]
fn autoencoder_trains_with_the_perceptual_term_and_checks_its_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lpips.toml");
    std::fs::write(&file, EXPERIMENT).unwrap();
    let (f, runs) = (file.to_str().unwrap(), dir.path().join("runs"));
    let runs_arg = ["--runs-dir", runs.to_str().unwrap()];

    let missing = ldm_run(dir.path(), &[&[f][..], &runs_arg].concat());
    assert!(!missing.status.success());
    let err = text(&missing);
    assert!(
        err.contains("stages.vae.lpips_weights") && err.contains("LPIPS weights file"),
        "{err}"
    );
    assert!(err.contains("weights/lpips.safetensors"), "{err}");
    let no_file = ldm_run(
        dir.path(),
        &[
            &[f, "--set", "stages.vae.lpips_weights=\"\""][..],
            &runs_arg,
        ]
        .concat(),
    );
    assert!(!no_file.status.success());
    let unset = std::fs::read_to_string(&file)
        .unwrap()
        .replace("lpips_weights = \"weights/lpips.safetensors\"\n", "");
    let unset_file = dir.path().join("unset.toml");
    std::fs::write(&unset_file, unset).unwrap();
    let err = text(&ldm_run(dir.path(), &[unset_file.to_str().unwrap()]));
    assert!(
        err.contains("stages.vae.perceptual_weight") && err.contains("needs LPIPS weights"),
        "{err}"
    );
    assert!(!runs.exists(), "nothing is written for a bad experiment");

    std::fs::create_dir(dir.path().join("weights")).unwrap();
    let weights = dir.path().join("weights/lpips.safetensors");
    random_weights(&weights, 5);
    let args = [&[f][..], &runs_arg].concat();
    let out = ldm_run(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    let perceptual: Vec<f64> = log
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "loss/perceptual")
        .map(|w| w[1].parse().unwrap())
        .collect();
    assert!(!perceptual.is_empty(), "{log}");
    assert!(perceptual.iter().all(|p| *p > 0.0), "{perceptual:?}");

    // The same weights: the finished stage is reused. Other weights at the same path: trained anew.
    let again = text(&ldm_run(dir.path(), &args));
    assert!(again.contains("nothing to train"), "{again}");
    random_weights(&weights, 6);
    let other = ldm_run(dir.path(), &args);
    assert!(other.status.success(), "{}", text(&other));
    assert!(
        !text(&other).contains("nothing to train"),
        "{}",
        text(&other)
    );
}
