//! End to end: `ldm-run experiments/smoke.toml` trains the autoencoder, the diffusion model and
//! a classifier, samples, and evaluates the samples, leaving a complete run folder that
//! TensorBoard reads; `ldm-run sample` then draws a grid for given prompts from that run.

mod common;

use std::path::{Path, PathBuf};

use common::{ldm_run, read_with_tensorboard, repo, text};
use serde_json::Value;

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

fn only_run(runs: &Path) -> PathBuf {
    let mut dirs = runs_of(runs);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

/// The runs of experiment `smoke` under `runs`, oldest first.
fn runs_of(runs: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs.join("smoke"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn manifest_of(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// The numbers of TensorBoard scalar `tag`: (step, value) pairs.
fn points(root: &Value, tag: &str) -> Vec<(u64, f64)> {
    root["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar {tag}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// The classifier and eval stages: manifest metrics, `metrics.json`, the grid and TensorBoard
/// agree with each other and with the autoencoder stage's own measurements.
fn check_classifier_and_eval(run: &Path, manifest: &Value, root: &Value) {
    let clf = &manifest["stages"]["clf"];
    assert_eq!(clf["steps_done"], 20);
    let test_acc = clf["metrics"]["test/accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_acc), "{test_acc}");
    // Run steps: the classifier runs after the autoencoder's and the diffusion stage's 30 each.
    let steps: Vec<u64> = points(root, "clf/loss/ce").iter().map(|p| p.0).collect();
    assert_eq!(steps, vec![65, 70, 75, 80]);
    let first_loss = points(root, "clf/loss/ce")[0].1;
    assert!(
        first_loss > 0.5 && first_loss < 3.0,
        "cross-entropy {first_loss}"
    );
    assert_eq!(points(root, "clf/accuracy").len(), 4);
    let held: Vec<u64> = points(root, "clf/held_out/accuracy")
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(held, vec![75, 80]);
    let tb_acc = points(root, "clf/test/accuracy");
    assert_eq!(tb_acc.len(), 1);
    assert!((tb_acc[0].1 - test_acc).abs() < 1e-6);

    let m = &manifest["stages"]["eval"]["metrics"];
    let get = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no eval metric {k}: {m}"))
    };
    let (acc, frechet, real) = (get("accuracy"), get("frechet"), get("frechet_real"));
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    // 30 diffusion steps make blobs, not digits: far from the test set, farther than 64 real
    // test images are from the others.
    assert!(
        frechet.is_finite() && real > 0.0 && frechet > real,
        "{frechet} vs {real}"
    );
    // The autoencoder's round trip moves real digits away from the test set, but less than
    // 30 diffusion steps' samples are.
    let round_trip = get("frechet_autoencoder");
    assert!(round_trip > real && round_trip < frechet, "{round_trip}");
    // The same autoencoder on the same 200 test images as the autoencoder stage measured.
    let vae = &manifest["stages"]["vae"]["metrics"];
    for (eval_key, vae_key) in [("psnr", "test/psnr"), ("ssim", "test/ssim")] {
        let (a, b) = (get(eval_key), vae[vae_key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{eval_key}: {a} vs {b}");
    }
    assert!(get("ssim") > 0.0 && get("ssim") < 1.0);
    assert_eq!(get("guidance_2/accuracy"), acc);
    assert_eq!(get("guidance_2/frechet"), frechet);
    assert!(get("guidance_1/frechet") > 0.0 && get("guidance_1/frechet") != frechet);
    assert!((0.0..=1.0).contains(&get("guidance_1/accuracy")));

    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/metrics.json")).expect("eval/metrics.json"),
    )
    .unwrap();
    assert_eq!(json["diffusion_stage"], "ldm");
    assert_eq!(json["classifier_stage"], "clf");
    assert_eq!(json["autoencoder_stage"], "vae");
    assert_eq!(json["conditional"], true);
    let settings = &json["settings"];
    assert_eq!(settings["samples"], 64);
    assert_eq!(settings["sampler"], "ddim");
    assert_eq!(settings["sampler_steps"], 5);
    assert_eq!(settings["guidance"], 2.0);
    assert_eq!(settings["guidance_sweep"], serde_json::json!([1.0]));
    assert_eq!(settings["seed"], 0);
    assert_eq!(json["accuracy"].as_f64().unwrap(), acc);
    assert_eq!(json["frechet"].as_f64().unwrap(), frechet);
    assert_eq!(json["frechet_real"].as_f64().unwrap(), real);
    assert_eq!(
        (
            &json["reference_images"],
            &json["real_images"],
            &json["rest_images"],
            &json["reconstruction_images"]
        ),
        (
            &Value::from(10_000),
            &Value::from(64),
            &Value::from(9_936),
            &Value::from(200)
        )
    );
    let per_class = json["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    assert_eq!(per_class[7]["class"], "seven");
    let count: u64 = per_class.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let correct: u64 = per_class
        .iter()
        .map(|r| r["correct"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 64);
    assert!((correct as f64 / 64.0 - acc).abs() < 1e-12);
    for row in per_class {
        let key = format!("class_{}/accuracy", row["class"].as_str().unwrap());
        assert_eq!(row["accuracy"].as_f64(), m[&key].as_f64(), "{key}");
    }
    let scales: Vec<f64> = json["scales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guidance"].as_f64().unwrap())
        .collect();
    assert_eq!(scales, vec![2.0, 1.0]);
    assert_eq!(
        json["scales"][1]["frechet"].as_f64(),
        Some(get("guidance_1/frechet"))
    );

    // The grid of the 64 samples, their prompts beside it.
    let side = 2 + 8 * (32 + 2);
    assert_eq!(png_size(&run.join("eval/samples/final.png")), (side, side));
    let prompts = std::fs::read_to_string(run.join("eval/samples/final.txt")).unwrap();
    assert_eq!(prompts.lines().count(), 8);
    let words: Vec<&str> = prompts.split_whitespace().collect();
    assert_eq!(words.len(), 64);
    let digits = words.iter().filter(|w| w.parse::<u32>().is_ok()).count();
    assert!(
        digits > 16 && digits < 48,
        "names and digits by equal chance: {words:?}"
    );

    // TensorBoard: the same numbers under the stage's name, the tables and the grid.
    for (tag, key) in [
        ("eval/accuracy", "accuracy"),
        ("eval/frechet", "frechet"),
        ("eval/frechet_real", "frechet_real"),
        ("eval/frechet_autoencoder", "frechet_autoencoder"),
        ("eval/psnr", "psnr"),
        ("eval/ssim", "ssim"),
        ("eval/guidance_1/accuracy", "guidance_1/accuracy"),
        ("eval/guidance_1/frechet", "guidance_1/frechet"),
        ("eval/class_seven/accuracy", "class_seven/accuracy"),
    ] {
        let p = points(root, tag);
        assert_eq!(p.len(), 1, "{tag}");
        let want = get(key);
        assert!(
            (p[0].1 - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{tag}: {p:?} vs {want}"
        );
    }
    let table = root["text"]["eval/metrics"][0]["text"].as_str().unwrap();
    assert!(
        table.contains("| guidance | accuracy | Frechet |") && table.contains("| seven |"),
        "{table}"
    );
    assert!(
        root["images"]["eval/samples"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    );
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eval: accuracy ") && err.contains("Frechet "),
        "the eval summary on stderr: {err}"
    );

    // The resolved configuration and the manifest.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("name = \"smoke\""), "{config}");
    let manifest = manifest_of(&run);
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["seed"], 0);
    assert_eq!(manifest["ldm_run_version"], env!("CARGO_PKG_VERSION"));
    for stage in ["vae", "ldm", "sample", "clf", "eval"] {
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
    for (stage, steps) in [("vae", [20, 30]), ("ldm", [20, 30]), ("clf", [10, 20])] {
        let mut names: Vec<String> = std::fs::read_dir(run.join(stage).join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        let want: Vec<String> = steps
            .iter()
            .map(|s| format!("step-{s:08}.safetensors"))
            .collect();
        assert_eq!(names, want, "{stage}");
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
    check_classifier_and_eval(&run, &manifest, root);
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

#[test]
fn eval_sampler_sweep_measures_every_sampler_on_the_same_prompts_and_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let sweep = "stages.eval.sampler_sweep=[{ sampler = \"ddim\", sampler_steps = 5 }, \
                 { sampler = \"dpmpp_2m\", sampler_steps = 4, sigmas = \"karras\" }, \
                 { sampler = \"heun\", sampler_steps = 3 }, \
                 { sampler = \"euler_ancestral\", sampler_steps = 4, spacing = \"trailing\" }]";
    let run_with = |sets: &[&str]| {
        let mut args = vec![
            "experiments/smoke.toml",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--set",
            sweep,
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = ldm_run(&repo(), &args);
        assert!(out.status.success(), "{}", text(&out));
        out
    };
    let out = run_with(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eval: dpmpp_2m_4_karras, guidance 2: accuracy"),
        "each measurement on stderr: {err}"
    );
    let run = runs_of(&runs).remove(0);
    let manifest = manifest_of(&run);
    assert_eq!(manifest["stages"]["sample"]["metrics"]["nfe"], 5.0);
    let m = &manifest["stages"]["eval"]["metrics"];
    let get = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no eval metric {k}: {m}"))
    };
    // The entry with the stage's own settings, on the same prompts and noise, scores the same.
    assert_eq!(get("sampler_ddim_5/frechet"), get("frechet"));
    assert_eq!(get("sampler_ddim_5/accuracy"), get("accuracy"));
    for (key, nfe) in [
        ("", 5.0),
        ("sampler_ddim_5/", 5.0),
        ("sampler_dpmpp_2m_4_karras/", 4.0),
        ("sampler_heun_3/", 5.0),
        ("sampler_euler_ancestral_4_trailing/", 4.0),
    ] {
        assert_eq!(get(&format!("{key}nfe")), nfe, "{key}");
        let seconds = get(&format!("{key}seconds_per_1000"));
        assert!(seconds > 0.0 && seconds.is_finite(), "{key}: {seconds}");
        let frechet = get(&format!("{key}frechet"));
        assert!(frechet > 0.0 && frechet.is_finite(), "{key}: {frechet}");
    }
    assert_ne!(get("sampler_dpmpp_2m_4_karras/frechet"), get("frechet"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(json["nfe"], 5);
    assert_eq!(json["settings"]["sample_seed"], 0);
    assert_eq!(json["settings"]["spacing"], "linspace");
    let samplers = json["samplers"].as_array().unwrap();
    assert_eq!(samplers.len(), 4);
    assert_eq!(samplers[1]["sampler"], "dpmpp_2m");
    assert_eq!(samplers[1]["sigmas"], "karras");
    assert_eq!(samplers[2]["nfe"], 5);
    let tb = read_with_tensorboard(&run);
    let root = &tb["provider"]["."];
    assert_eq!(
        points(root, "eval/sampler_heun_3/nfe"),
        vec![(get_step(root), 5.0)]
    );
    assert_eq!(points(root, "sample/nfe").len(), 1);
    let table = root["text"]["eval/metrics"][0]["text"].as_str().unwrap();
    assert!(
        table.contains("| sampler | steps | spacing | sigmas | eta | NFE |")
            && table.contains("| heun | 3 | linspace | schedule | 0 | 5 |"),
        "{table}"
    );

    // Another sample seed: the trained stages are reused, only the eval runs again, on other
    // prompts and noise; the experiment's own seed given as the sample seed changes nothing.
    run_with(&["stages.eval.sample_seed=7"]);
    run_with(&["stages.eval.sample_seed=0"]);
    let all = runs_of(&runs);
    assert_eq!(all.len(), 3);
    let (seven, zero) = (manifest_of(&all[1]), manifest_of(&all[2]));
    for stage in ["vae", "ldm", "clf"] {
        assert!(
            seven["stages"][stage]["reused_from"].is_string(),
            "{stage}: {seven}"
        );
    }
    let frechet = |m: &Value, k: &str| m["stages"]["eval"]["metrics"][k].as_f64().unwrap();
    assert_ne!(frechet(&seven, "frechet"), get("frechet"));
    for k in ["frechet", "accuracy", "sampler_heun_3/frechet"] {
        assert_eq!(frechet(&zero, k), get(k), "{k}");
    }

    // `ldm-run sample` with a sampler of the sweep, on Karras sigmas.
    let png = tmp.path().join("dpm.png");
    let out = ldm_run(
        &repo(),
        &[
            "sample",
            run.to_str().unwrap(),
            "--prompts",
            "one 2",
            "--sampler",
            "dpmpp_2m",
            "--sigmas",
            "karras",
            "--steps",
            "4",
            "--guidance-rescale",
            "0.7",
            "--out",
            png.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dpmpp_2m: 4 network evaluations per sample"),
        "{}",
        text(&out)
    );
    assert_eq!(png_size(&png), (2 + 2 * 34, 2 + 34));
}

/// The step of the eval stage's scalars (one point each).
fn get_step(root: &Value) -> u64 {
    points(root, "eval/frechet")[0].0
}
