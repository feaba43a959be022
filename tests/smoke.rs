//! End to end: `ldm-run experiments/smoke.toml` trains the autoencoder, the diffusion model and
//! samples, leaving a complete run folder that TensorBoard reads; `ldm-run sample` then draws
//! a grid for given prompts from that run.

mod common;

use std::path::{Path, PathBuf};

use common::{ldm_run, read_with_tensorboard, repo, text};
use serde_json::Value;

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

fn only_run(runs: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs.join("smoke"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

#[test]
fn smoke_experiment_runs_every_stage_and_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = ldm_run(
        &repo(),
        &[
            "experiments/smoke.toml",
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let run = only_run(&runs);

    // The resolved configuration and the manifest.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("name = \"smoke\""), "{config}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["seed"], 0);
    assert_eq!(manifest["ldm_run_version"], env!("CARGO_PKG_VERSION"));
    for stage in ["vae", "ldm", "sample"] {
        assert_eq!(
            manifest["stages"][stage]["status"], "finished",
            "{stage}: {manifest}"
        );
    }
    assert_eq!(manifest["stages"]["vae"]["steps_done"], 30);
    let psnr = manifest["stages"]["vae"]["metrics"]["test/psnr"]
        .as_f64()
        .unwrap();
    assert!(psnr > 8.0 && psnr < 60.0, "test PSNR {psnr}");
    let scale: f64 = manifest["stages"]["ldm"]["notes"]["scale_factor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(scale > 0.0);

    // Checkpoints: the newest two of each training stage.
    for stage in ["vae", "ldm"] {
        let mut names: Vec<String> = std::fs::read_dir(run.join(stage).join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["step-00000020.safetensors", "step-00000030.safetensors"],
            "{stage}"
        );
    }

    // Sample grids: 8x8 tiles of 32 pixels with 2 pixels of padding.
    let side = 2 + 8 * (32 + 2);
    assert_eq!(
        png_size(&run.join("vae/samples/step-000030-random.png")),
        (side, side)
    );
    assert_eq!(
        png_size(&run.join("vae/samples/step-000030-reconstructions.png")).1,
        side
    );
    assert_eq!(
        png_size(&run.join("ldm/samples/step-000030.png")),
        (side, side)
    );
    assert_eq!(
        png_size(&run.join("ldm/samples/step-000030-unconditional.png")),
        (side, side)
    );
    assert_eq!(
        png_size(&run.join("sample/samples/final.png")),
        (side, side)
    );
    let prompts = std::fs::read_to_string(repo().join("experiments/sample_prompts.txt")).unwrap();
    let written = std::fs::read_to_string(run.join("sample/samples/final.txt")).unwrap();
    assert_eq!(
        written.split_whitespace().collect::<Vec<_>>(),
        prompts.split_whitespace().collect::<Vec<_>>()
    );
    assert_eq!(written.lines().count(), 8, "8 prompts per line");
    assert!(run.join("ldm/tokenizer.json").is_file());

    // One event file, read by TensorBoard itself.
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(events.len(), 1);
    let tb = read_with_tensorboard(&run);
    let root = &tb["provider"]["."];
    let rec: Vec<u64> = root["scalars"]["vae/loss/rec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(rec, vec![5, 10, 15, 20, 25, 30]);
    assert!(root["scalars"]["ldm/loss/mse"].as_array().unwrap().len() == 6);
    for tag in [
        "vae/reconstructions",
        "vae/random_latents",
        "ldm/samples",
        "ldm/unconditional",
        "sample/samples",
    ] {
        let img = &root["images"][tag];
        assert!(
            img.as_array().is_some_and(|a| !a.is_empty()),
            "image {tag}: {root}"
        );
    }
    let text_tags = root["text"].as_object().unwrap();
    assert!(
        text_tags.contains_key("ldm/prompts") && text_tags.contains_key("config"),
        "{text_tags:?}"
    );

    // `ldm-run sample` on the finished run.
    let png = tmp.path().join("four.png");
    let out = ldm_run(
        &repo(),
        &[
            "sample",
            run.to_str().unwrap(),
            "--prompts",
            "one nine 2 3",
            "--steps",
            "4",
            "--out",
            png.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(png_size(&png), (2 + 4 * 34, 2 + 34));
    assert_eq!(
        std::fs::read_to_string(png.with_extension("txt"))
            .unwrap()
            .trim(),
        "one nine 2 3"
    );

    let out = ldm_run(
        &repo(),
        &["sample", run.to_str().unwrap(), "--prompts", "one eleven"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown word `eleven`") && err.contains("known words: zero, one"),
        "{err}"
    );

    // A run whose diffusion stage has not finished cannot be sampled.
    let mut manifest = manifest.clone();
    manifest["stages"]["ldm"]["status"] = "interrupted".into();
    std::fs::write(run.join("manifest.json"), manifest.to_string()).unwrap();
    let out = ldm_run(
        &repo(),
        &["sample", run.to_str().unwrap(), "--prompts", "one"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage `ldm`") && err.contains("has not finished"),
        "{err}"
    );
}
