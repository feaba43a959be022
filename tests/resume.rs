//! Resume and fault safety on the smoke experiment: an interrupted run, resumed, ends with the
//! same bytes as the run that was never interrupted; damaged checkpoints, changed settings and
//! a second runner are handled without losing anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Curve, data_dir, ldm_run, repo, text, wait_for};

/// Short stages with frequent checkpoints, the same for every run of this file.
const SETTINGS: &[&str] = &[
    "--set",
    "stages.vae.steps=24",
    "--set",
    "stages.vae.checkpoint_every=4",
    "--set",
    "stages.vae.keep_checkpoints=3",
    "--set",
    "stages.ldm.steps=24",
    "--set",
    "stages.ldm.checkpoint_every=4",
    "--set",
    "stages.ldm.keep_checkpoints=3",
    "--set",
    "logging.sample_every=12",
    "--set",
    "stages.vae.eval_every=8",
    "--set",
    "stages.vae.held_out_images=32",
    "--set",
    "stages.ldm.eval_every=8",
    "--set",
    "stages.ldm.held_out_images=32",
    "--set",
    "stages.ldm.keep_best=held_out/loss",
    "--set",
    "stages.sample.checkpoint=best",
];

/// The held-out curves logged to TensorBoard.
const HELD_OUT_TAGS: &[&str] = &["vae/held_out/loss", "ldm/held_out/loss"];

/// The diffusion stage judges 16 samples with the classifier stage at every held-out
/// measurement and keeps the checkpoint of the lowest Frechet distance.
const JUDGED: &[&str] = &[
    "--set",
    "stages.ldm.needs=[\"vae\", \"clf\"]",
    "--set",
    "stages.ldm.judge_samples=16",
    "--set",
    "stages.ldm.keep_best=held_out/frechet",
];

/// The curves of a judged run: the held-out loss and the judged samples' metrics.
const JUDGED_TAGS: &[&str] = &[
    "vae/held_out/loss",
    "ldm/held_out/loss",
    "ldm/held_out/accuracy",
    "ldm/held_out/frechet",
    "ldm/held_out/kid",
];

fn args<'a>(runs: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "experiments/smoke.toml",
        "--runs-dir",
        runs.to_str().unwrap(),
    ];
    a.extend_from_slice(SETTINGS);
    a.extend_from_slice(extra);
    a
}

fn spawn(runs: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args(args(runs, extra))
        .current_dir(repo())
        .env("LDM_DATA_DIR", data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs.join("smoke"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// A new run with `extra` arguments, interrupted (SIGINT) once it has written `checkpoint`:
/// its folder and the process's output.
fn interrupted_at(
    runs: &Path,
    extra: &[&str],
    checkpoint: &str,
) -> (PathBuf, std::process::Output) {
    let mut child = spawn(runs, extra);
    let start = Instant::now();
    while !runs.join("smoke").exists()
        || std::fs::read_dir(runs.join("smoke"))
            .unwrap()
            .next()
            .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = run_dir(runs);
    wait_for(&run.join(checkpoint), &mut child);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    (run, child.wait_with_output().unwrap())
}

/// The final checkpoints, the kept best one, and the grid sampled from it.
fn final_bytes(run: &Path) -> Vec<Vec<u8>> {
    let best = ldm_run::train::checkpoint::list(&run.join("ldm/checkpoints/best"));
    assert_eq!(best.len(), 1, "one best checkpoint: {best:?}");
    let mut bytes: Vec<Vec<u8>> = [
        "vae/checkpoints/step-00000024.safetensors",
        "ldm/checkpoints/step-00000024.safetensors",
        "ldm/tokenizer.json",
        "sample/samples/final.png",
    ]
    .iter()
    .map(|f| std::fs::read(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
    .collect();
    bytes.push(std::fs::read(&best[0].1).unwrap());
    bytes
}

fn status(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

fn resume(run: &Path, runs: &Path) -> std::process::Output {
    ldm_run(
        &repo(),
        &[
            "--resume",
            run.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
    )
}

fn reference(extra: &[&str], tags: &[&str]) -> (Vec<Vec<u8>>, Vec<Curve>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = ldm_run(&repo(), &args(tmp.path(), extra));
    assert!(out.status.success(), "{}", text(&out));
    let run = run_dir(tmp.path());
    (final_bytes(&run), common::scalar_curves(&run, tags))
}

#[test]
fn interrupted_runs_resume_to_the_same_bytes() {
    let (want, want_curves) = reference(JUDGED, JUDGED_TAGS);

    // SIGINT during the autoencoder: it finishes the step, checkpoints, exits non-zero.
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path();
    let (run, out) = interrupted_at(runs, JUDGED, "vae/checkpoints/step-00000008.safetensors");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an interrupted run exits non-zero");
    assert!(
        err.contains(&format!("ldm-run --resume {}", run.display())),
        "{err}"
    );
    let m = status(&run);
    assert_eq!(m["status"], "interrupted", "{m}");
    assert_eq!(m["stages"]["vae"]["status"], "interrupted", "{m}");
    let done = m["stages"]["vae"]["steps_done"].as_u64().unwrap();
    assert!((8..24).contains(&done), "stopped at step {done}");

    // A changed training setting is refused, naming the key; nothing is touched.
    let config = std::fs::read(run.join("config.toml")).unwrap();
    let out = ldm_run(
        &repo(),
        &args(
            runs,
            &[
                JUDGED,
                &["--resume", "latest", "--set", "stages.vae.lr=5e-4"],
            ]
            .concat(),
        ),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stages.vae.lr: 0.001 -> 0.0005"), "{err}");
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), config);

    // A second runner on the same folder is refused.
    let lock = ldm_run::plan::lock::RunLock::acquire(&run).unwrap();
    let out = resume(&run, runs);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another ldm-run process"),
        "{}",
        text(&out)
    );
    drop(lock);

    // Kill -9 during the diffusion stage, at whatever step it is.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args([
            "--resume",
            run.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ])
        .current_dir(repo())
        .env("LDM_DATA_DIR", data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        &run.join("ldm/checkpoints/step-00000008.safetensors"),
        &mut child,
    );
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        status(&run)["stages"]["ldm"]["status"],
        "running",
        "SIGKILL leaves no chance to record"
    );

    // The newest checkpoint is damaged: the previous valid one is used.
    let newest = ldm_run::train::checkpoint::list(&run.join("ldm/checkpoints"))[0]
        .1
        .clone();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();

    // `latest` finds this unfinished run of the experiment.
    let out = ldm_run(
        &repo(),
        &args(runs, &[JUDGED, &["--resume", "latest"]].concat()),
    );
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("using an older checkpoint"),
        "{err}"
    );
    assert_eq!(status(&run)["status"], "finished");
    assert_eq!(status(&run)["resumes"].as_array().unwrap().len(), 2);
    assert!(
        final_bytes(&run) == want,
        "resumed weights and samples must equal the uninterrupted run's"
    );

    // TensorBoard shows every logged step once, across the three processes' event files.
    // Steps are run steps: a stage's count on from the training stages before it.
    let m = status(&run);
    let mut offsets = std::collections::BTreeMap::new();
    let mut offset = 0;
    for name in m["order"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        offsets.insert(name.to_string(), offset);
        offset += m["stages"][name]["steps_total"].as_u64().unwrap();
    }
    let tb = common::read_with_tensorboard(&run);
    for (tag, stage) in [("vae/loss/rec", "vae"), ("ldm/loss/mse", "ldm")] {
        let steps: Vec<u64> = tb["provider"]["."]["scalars"][tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = [5, 10, 15, 20, 24]
            .iter()
            .map(|s| s + offsets[stage])
            .collect();
        assert_eq!(steps, want, "{tag}");
    }

    // The held-out curves, the judged samples' too: a point every 8 steps, once each,
    // bit-identical to the uninterrupted run's; the sample stage loaded the best checkpoint
    // the diffusion kept.
    let curves = common::scalar_curves(&run, JUDGED_TAGS);
    assert_eq!(
        curves, want_curves,
        "held-out curves across two kills and resumes"
    );
    for (tag, curve) in JUDGED_TAGS.iter().zip(&curves) {
        let stage = tag.split('/').next().unwrap();
        let steps: Vec<u64> = curve.iter().map(|(s, _)| s - offsets[stage]).collect();
        assert_eq!(steps, [8, 16, 24], "{tag}");
    }
    let best = m["stages"]["ldm"]["metrics"]["best_step"].as_f64().unwrap() as u64;
    assert_eq!(
        m["stages"]["sample"]["notes"]["checkpoint"],
        format!("best (step {best})")
    );
    let lowest = curves[3]
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, _)| s - offsets["ldm"]);
    assert_eq!(
        lowest,
        Some(best),
        "the best step has the lowest Frechet distance of the judged samples"
    );
    // TensorBoard keeps f32 values, the manifest f64.
    for (i, metric) in [(1, "loss"), (2, "accuracy"), (3, "frechet"), (4, "kid")] {
        assert_eq!(
            m["stages"]["ldm"]["metrics"][format!("held_out/{metric}")]
                .as_f64()
                .map(|v| v as f32),
            curves[i].last().map(|p| p.1 as f32),
            "{metric}"
        );
    }
    let accuracy = curves[2].last().unwrap().1;
    assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");
    assert!(curves[3].iter().all(|p| p.1 > 0.0), "{:?}", curves[3]);
}

/// A captioned colour folder in `root`: 16 training and 4 test pictures, each coloured on its
/// left half only (so a mirrored one differs), captioned, in two groups.
fn captioned_pictures(root: &Path) {
    for (split, n) in [("train", 16), ("test", 4)] {
        let dir = root.join(split);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rows = String::new();
        for i in 0..n {
            let colour = [[220, 30, 30], [30, 30, 220]][i % 2];
            let name = ["red", "blue"][i % 2];
            image::RgbImage::from_fn(16, 16, |x, y| {
                image::Rgb(if x < 8 && y >= i as u32 % 8 {
                    colour
                } else {
                    [255, 255, 255]
                })
            })
            .save(dir.join(format!("{i}.png")))
            .unwrap();
            rows.push_str(&format!(
                "{{\"file_name\": \"{i}.png\", \"text\": \"{name} flag number {i}\", \"group\": \"{name}\"}}\n"
            ));
        }
        std::fs::write(dir.join("metadata.jsonl"), rows).unwrap();
    }
}

/// Flips and a BPE tokenizer learned from captions: a run interrupted during the diffusion
/// stage resumes (its saved tokenizer.json and the flip stream's state) to the same bytes, and
/// its samples judged against both splits give the same curves.
#[test]
fn captioned_flipped_runs_resume_to_the_same_bytes() {
    let data = tempfile::tempdir().unwrap();
    captioned_pictures(data.path());
    let root = format!("dataset.root=\"{}\"", data.path().display());
    let extra = [
        "--set",
        "dataset.name=\"image_folder\"",
        "--set",
        root.as_str(),
        "--set",
        "dataset.channels=3",
        "--set",
        "dataset.label_column=\"group\"",
        "--set",
        "dataset.flip=true",
        "--set",
        "conditioning.tokenizer=\"bpe\"",
        "--set",
        "conditioning.vocab_size=300",
        "--set",
        "conditioning.max_tokens=6",
    ];
    // Judged by the group classifier against both splits (caption prompts).
    let extra = [&extra[..], JUDGED].concat();
    let (want, want_curves) = reference(&extra, JUDGED_TAGS);

    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path();
    let (run, out) = interrupted_at(runs, &extra, "ldm/checkpoints/step-00000008.safetensors");
    assert!(!out.status.success(), "an interrupted run exits non-zero");
    let m = status(&run);
    assert_eq!(m["stages"]["ldm"]["status"], "interrupted", "{m}");
    assert!(run.join("ldm/tokenizer.json").is_file());

    let out = resume(&run, runs);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status(&run)["status"], "finished");
    assert!(
        final_bytes(&run) == want,
        "resumed weights, tokenizer and samples must equal the uninterrupted run's"
    );
    assert_eq!(common::scalar_curves(&run, JUDGED_TAGS), want_curves);
}

#[test]
fn bad_loss_stops_the_stage_and_force_resumes_with_new_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path();
    let nan = [
        "--set",
        "stages.vae.lr=1e30",
        "--set",
        "stages.vae.grad_clip=0",
    ];
    let out = ldm_run(&repo(), &args(runs, &nan));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage `vae` stopped at step") && err.contains("became NaN"),
        "{err}"
    );
    assert!(err.contains("try a lower stages.vae.lr"), "{err}");
    let run = run_dir(runs);
    let m = status(&run);
    assert_eq!(m["status"], "failed");
    assert_eq!(m["stages"]["vae"]["status"], "failed");
    assert!(
        m["stages"]["vae"]["error"]
            .as_str()
            .unwrap()
            .contains("NaN")
    );

    // Resuming with other training settings is refused, then allowed with --force and recorded.
    let fixed = ["--resume", "latest", "--set", "stages.vae.grad_clip=0"];
    let out = ldm_run(&repo(), &args(runs, &fixed));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stages.vae.lr: 1e+30 -> 0.001"),
        "{}",
        text(&out)
    );
    let mut forced = fixed.to_vec();
    forced.push("--force");
    let out = ldm_run(&repo(), &args(runs, &forced));
    assert!(out.status.success(), "{}", text(&out));
    let m = status(&run);
    assert_eq!(m["status"], "finished");
    let resume = &m["resumes"][0];
    assert_eq!(resume["forced"], true);
    assert_eq!(resume["from_status"], "failed");
    assert!(
        resume["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("stages.vae.lr"))
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("lr = 0.001"), "{config}");
}

#[test]
fn training_noise_options_resume_to_the_same_bytes() {
    // Offset noise and input perturbation draw from the checkpointed noise stream; v on a zero
    // terminal SNR schedule, sampled on trailing timesteps.
    let options = [
        "--set",
        "stages.ldm.noise_offset=0.1",
        "--set",
        "stages.ldm.input_perturbation=0.1",
        "--set",
        "schedule.prediction=\"v\"",
        "--set",
        "schedule.zero_terminal_snr=true",
        "--set",
        "stages.sample.spacing=\"trailing\"",
    ];
    let (want, _) = reference(&options, HELD_OUT_TAGS);
    assert!(
        want != reference(&options[4..], HELD_OUT_TAGS).0,
        "offset noise and input perturbation change the weights"
    );
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path();
    let (run, out) = interrupted_at(runs, &options, "ldm/checkpoints/step-00000008.safetensors");
    assert!(!out.status.success());
    let done = status(&run)["stages"]["ldm"]["steps_done"]
        .as_u64()
        .unwrap();
    assert!((8..24).contains(&done), "stopped at step {done}");
    let out = resume(&run, runs);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        final_bytes(&run) == want,
        "resumed weights and samples must equal the uninterrupted run's"
    );
}
