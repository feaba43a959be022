//! A table of bad inputs, tried as a hostile user would: experiment files, `--set`, the
//! environment, sweeps, files the configuration names, resumes, `sample` and `ls`. Each must
//! exit non-zero with a message that names where the value came from, the key and what was
//! expected, and must leave every file and folder as it was: the runs folder, the data folder,
//! the experiment's folder and the runs being resumed or sampled.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{repo, text};

/// How a case changes the smoke experiment (written as `exp.toml` in the case's folder).
enum Exp {
    /// The smoke experiment as shipped.
    Smoke,
    /// The smoke experiment with these replacements (each must apply).
    Replace(&'static [(&'static str, &'static str)]),
    /// The smoke experiment with this text appended.
    Append(&'static str),
    /// This whole file instead.
    Whole(&'static [u8]),
}

/// One bad input.
struct Case {
    name: &'static str,
    exp: Exp,
    /// Other files of the case's folder (path relative to it, content).
    files: &'static [(&'static str, &'static [u8])],
    /// Arguments; `{exp}` is the experiment file, `{runs}` the runs folder, `{run}` a copy of a
    /// finished smoke run, `{dir}` the case's folder.
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Every one must appear in stderr.
    expect: &'static [&'static str],
    /// Changes the case's folder (and the finished run's copy, if it has one) before the run.
    prepare: Option<fn(&Path, Option<&Path>)>,
    /// Copy a finished smoke run into the case's runs folder (as `{run}`).
    with_run: bool,
}

const RUN: &[&str] = &["{exp}", "--runs-dir", "{runs}"];

fn smoke() -> String {
    std::fs::read_to_string(repo().join("experiments/smoke.toml")).unwrap()
}

/// A finished smoke run, made once per test process, to resume and sample from.
fn finished_run() -> &'static Path {
    static RUN_DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN_DIR
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let exp = repo().join("experiments/smoke.toml");
            let runs = dir.path().join("runs");
            let out = common::ldm_run(
                dir.path(),
                &[exp.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()],
            );
            assert!(out.status.success(), "{}", text(&out));
            let run = std::fs::read_dir(runs.join("smoke"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            (dir, run)
        })
        .1
}

/// Every path under `root` (files, folders, links), with each file's length.
fn snapshot(root: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.insert((path, if meta.is_file() { meta.len() } else { 0 }));
        }
    }
    out
}

/// Runs the binary, killing it after `limit`: a hang is an error, not a stuck test.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(format!("ldm-run hung for {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

fn check(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The data folder: links to the real files, so anything written there shows.
    let data = dir.join("data/mnist");
    std::fs::create_dir_all(&data).unwrap();
    for f in ldm_run::data::files::MNIST.all() {
        let real = common::mnist_file(f.name);
        std::os::unix::fs::symlink(&real, data.join(real.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        repo().join("experiments/sample_prompts.txt"),
        dir.join("sample_prompts.txt"),
    )
    .unwrap();
    let exp = dir.join("exp.toml");
    let content: Vec<u8> = match &case.exp {
        Exp::Smoke => smoke().into_bytes(),
        Exp::Replace(pairs) => {
            let mut s = smoke();
            for (from, to) in *pairs {
                assert!(
                    s.contains(from),
                    "{}: `{from}` not in smoke.toml",
                    case.name
                );
                s = s.replacen(from, to, 1);
            }
            s.into_bytes()
        }
        Exp::Append(extra) => format!("{}\n{extra}\n", smoke()).into_bytes(),
        Exp::Whole(bytes) => bytes.to_vec(),
    };
    std::fs::write(&exp, content).unwrap();
    for (path, bytes) in case.files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let run = if case.with_run {
        let copy = dir.join("runs/smoke/finished");
        copy_tree(finished_run(), &copy);
        Some(copy)
    } else {
        None
    };
    if let Some(prepare) = case.prepare {
        prepare(dir, run.as_deref());
    }
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| {
            a.replace("{exp}", exp.to_str().unwrap())
                .replace("{runs}", dir.join("runs").to_str().unwrap())
                .replace("{dir}", dir.to_str().unwrap())
                .replace("{run}", run.as_deref().map_or("", |r| r.to_str().unwrap()))
        })
        .collect();
    let before = snapshot(dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldm-run"));
    cmd.args(&args)
        .current_dir(dir)
        .env("LDM_DATA_DIR", dir.join("data"))
        .env_remove("RUST_LOG");
    for (k, v) in case.env {
        cmd.env(k, v);
    }
    if case.name == "non-UTF-8 override value" {
        use std::os::unix::ffi::OsStrExt;
        cmd.env(
            "LDM_STAGES__VAE__LR",
            std::ffi::OsStr::from_bytes(&[b'1', 0xff]),
        );
    }
    let out =
        run_with_limit(cmd, Duration::from_secs(60)).map_err(|e| format!("{}: {e}", case.name))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.success() {
        wrong.push("it was not refused".to_string());
    }
    for want in case.expect {
        if !stderr.contains(want) {
            wrong.push(format!("the message lacks `{want}`"));
        }
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        wrong.push("it panicked".to_string());
    }
    let after = snapshot(dir);
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    if !added.is_empty() || !removed.is_empty() {
        wrong.push(format!(
            "files changed: added {added:?}, removed {removed:?}"
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n{}",
            case.name,
            wrong.join("; "),
            text(&out)
        ))
    }
}

unsafe extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

fn make_fifo(dir: &Path, _: Option<&Path>) {
    let fifo = std::ffi::CString::new(dir.join("fifo.toml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc_mkfifo(fifo.as_ptr(), 0o644) }, 0);
}

/// Marks the run interrupted in its vae stage, as a Ctrl-C would have left it.
fn interrupt(run: &Path) {
    let path = run.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["status"] = "interrupted".into();
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn edit_config(_: &Path, run: Option<&Path>) {
    let run = run.unwrap();
    interrupt(run);
    let path = run.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("lr = 0.001"));
    std::fs::write(&path, text.replacen("lr = 0.001", "lr = 0.002", 1)).unwrap();
}

fn interrupted(_: &Path, run: Option<&Path>) {
    interrupt(run.unwrap());
}

fn damage_manifest(_: &Path, run: Option<&Path>) {
    std::fs::write(run.unwrap().join("manifest.json"), b"{ not json").unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
}

/// A run of the case's experiment file, `exp`, refused with `expect`.
fn file_case(name: &'static str, exp: Exp, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        exp,
        files: &[],
        args: RUN,
        env: &[],
        expect,
        prepare: None,
        with_run: false,
    }
}

/// Cases on the experiment file itself.
fn file_cases() -> Vec<Case> {
    let c = file_case;
    vec![
        Case {
            name: "missing experiment file",
            args: &["{dir}/nope.toml", "--runs-dir", "{runs}"],
            ..c(
                "",
                Exp::Smoke,
                &["nope.toml does not exist", "experiments/smoke.toml"],
            )
        },
        Case {
            name: "folder as the experiment file",
            args: &["{dir}/data", "--runs-dir", "{runs}"],
            ..c("", Exp::Smoke, &["data is not a regular file"])
        },
        Case {
            name: "fifo as the experiment file",
            args: &["{dir}/fifo.toml", "--runs-dir", "{runs}"],
            prepare: Some(make_fifo),
            ..c("", Exp::Smoke, &["fifo.toml is not a regular file"])
        },
        c(
            "experiment file not UTF-8",
            Exp::Whole(b"[experiment]\nname = \"a\xff\"\n"),
            &["exp.toml is not UTF-8 text", "offset"],
        ),
        c(
            "malformed TOML",
            Exp::Whole(b"[experiment]\nname = = 1\n"),
            &["exp.toml:2:", "malformed TOML"],
        ),
        c(
            "empty experiment file",
            Exp::Whole(b""),
            &["key `experiment`: missing: this key is required"],
        ),
        c(
            "unknown section",
            Exp::Append("[unett]\nmodel_channels = 8"),
            &["exp.toml", "key `unett`: unknown key; did you mean `unet`?"],
        ),
        c(
            "unknown key with a close one",
            Exp::Replace(&[("ch = 16", "chh = 16")]),
            &["exp.toml", "key `autoencoder.chh`", "did you mean `ch`?"],
        ),
        c(
            "text where a number goes",
            Exp::Replace(&[("ch = 16", "ch = \"wide\"")]),
            &[
                "exp.toml",
                "key `autoencoder.ch`",
                "expected a non-negative integer",
            ],
        ),
        c(
            "negative width",
            Exp::Replace(&[("ch = 16", "ch = -16")]),
            &["key `autoencoder.ch`", "expected a non-negative integer"],
        ),
        c(
            "fraction of a step",
            Exp::Replace(&[(
                "steps = 30\nbatch_size = 16",
                "steps = 1.5\nbatch_size = 16",
            )]),
            &["key `stages.vae.steps`", "expected a non-negative integer"],
        ),
        c(
            "number where a table goes",
            Exp::Whole(
                b"unet = 3\n[experiment]\nname = \"x\"\n[stages.v]\nkind = \"autoencoder\"\n",
            ),
            &["key `unet`", "expected a table"],
        ),
        c(
            "zero in a width list",
            Exp::Replace(&[("ch_mult = [1, 2, 2]", "ch_mult = [1, 0, 2]")]),
            &["key `autoencoder.ch_mult`", "contains 0"],
        ),
        c(
            "empty width list",
            Exp::Replace(&[("ch_mult = [1, 2, 2]", "ch_mult = []")]),
            &["key `autoencoder.ch_mult`", "at least one value"],
        ),
        c(
            "three Adam betas",
            Exp::Replace(&[(
                "lr = 1e-3\ncheckpoint_every = 10\nkeep",
                "lr = 1e-3\nbetas = [0.9, 0.99, 0.5]\ncheckpoint_every = 10\nkeep",
            )]),
            &[
                "key `stages.vae.betas`",
                "wrong length 3",
                "a list of 2 numbers",
            ],
        ),
        c(
            "beta of 1.5",
            Exp::Replace(&[(
                "lr = 1e-3\ncheckpoint_every = 10\nkeep",
                "lr = 1e-3\nbetas = [1.5, 0.99]\ncheckpoint_every = 10\nkeep",
            )]),
            &["key `stages.vae.betas`", "1.5 is out of range"],
        ),
        c(
            "learning rate nan",
            Exp::Replace(&[(
                "lr = 1e-3\ncheckpoint_every = 10\nkeep",
                "lr = nan\ncheckpoint_every = 10\nkeep",
            )]),
            &["key `stages.vae.lr`", "NaN must be a positive number"],
        ),
        c(
            "learning rate infinite",
            Exp::Replace(&[(
                "lr = 1e-3\ncheckpoint_every = 10\nkeep",
                "lr = inf\ncheckpoint_every = 10\nkeep",
            )]),
            &["key `stages.vae.lr`", "inf must be a positive number"],
        ),
        c(
            "dropout of 1",
            Exp::Replace(&[("dropout = 0.1", "dropout = 1.0")]),
            &["key `unet.dropout`", "expected 0 <= value < 1"],
        ),
        c(
            "groups that do not divide the widths",
            Exp::Replace(&[("norm_groups = 8\n\n# UNet", "norm_groups = 12\n\n# UNet")]),
            &["key `autoencoder.norm_groups`", "GroupNorm cannot split"],
        ),
        c(
            "image size the autoencoder cannot halve",
            Exp::Replace(&[("image_size = 32", "image_size = 30")]),
            &["key `dataset.image_size`", "not divisible by 4"],
        ),
        c(
            "attention at a resolution never reached",
            Exp::Replace(&[("attn_resolutions = [8]", "attn_resolutions = [5]")]),
            &[
                "key `autoencoder.attn_resolutions`",
                "resolution 5 is never reached",
            ],
        ),
        c(
            "latent size that does not match",
            Exp::Replace(&[(
                "model_channels = 32",
                "model_channels = 32\nlatent_size = 16",
            )]),
            &[
                "key `unet.latent_size`",
                "16 does not match the autoencoder's latent side 8",
            ],
        ),
        c(
            "odd UNet width",
            Exp::Replace(&[("model_channels = 32", "model_channels = 31")]),
            &["key `unet.model_channels`", "31 is odd"],
        ),
        c(
            "text encoder wider than the context",
            Exp::Replace(&[("layers = 1", "layers = 1\nwidth = 64")]),
            &[
                "key `conditioning.width`",
                "does not match unet.context_dim 32",
            ],
        ),
        c(
            "heads that do not divide the text width",
            Exp::Replace(&[("heads = 2\nmax_tokens", "heads = 5\nmax_tokens")]),
            &[
                "key `conditioning.heads`",
                "5 heads do not divide the text encoder width 32",
            ],
        ),
        c(
            "zero diffusion steps",
            Exp::Replace(&[("timesteps = 1000", "timesteps = 0")]),
            &["key `schedule.timesteps`", "must be at least 1"],
        ),
        c(
            "betas backwards",
            Exp::Replace(&[(
                "timesteps = 1000",
                "timesteps = 1000\nbeta_start = 0.02\nbeta_end = 0.0001",
            )]),
            &[
                "key `schedule.beta_end`",
                "expected 0 < beta_start < beta_end < 1",
            ],
        ),
        c(
            "more sampler steps than timesteps",
            Exp::Replace(&[(
                "sampler_steps = 5\nguidance = 2.0\nsamples",
                "sampler_steps = 5000\nguidance = 2.0\nsamples",
            )]),
            &["key `stages.eval.sampler_steps`", "expected at most 1000"],
        ),
        c(
            "eta of 2",
            Exp::Replace(&[(
                "sampler_steps = 5\nguidance = 2.0\nsamples",
                "sampler_steps = 5\neta = 2.0\nguidance = 2.0\nsamples",
            )]),
            &["key `stages.eval.eta`", "expected 0 <= eta <= 1"],
        ),
        c(
            "negative guidance",
            Exp::Replace(&[(
                "sampler_steps = 5\nguidance = 2.0\nsamples",
                "sampler_steps = 5\nguidance = -1.0\nsamples",
            )]),
            &["key `stages.eval.guidance`", "expected 0 <= guidance"],
        ),
        c(
            "unknown sampler",
            Exp::Replace(&[(
                "sampler = \"ddim\"\nsampler_steps = 5\nguidance = 2.0\nprompts_file",
                "sampler = \"ddim2\"\nsampler_steps = 5\nguidance = 2.0\nprompts_file",
            )]),
            &["key `stages.ldm.sampler`", "unknown value `ddim2`", "ddim"],
        ),
        c(
            "unknown stage kind",
            Exp::Replace(&[("kind = \"autoencoder\"", "kind = \"autoencodr\"")]),
            &[
                "key `stages.vae.kind`",
                "unknown value `autoencodr`",
                "autoencoder",
            ],
        ),
        c(
            "stage without a kind",
            Exp::Replace(&[("kind = \"autoencoder\"\n", "")]),
            &["key `stages.vae.kind`", "missing"],
        ),
        c(
            "training stage without its required keys",
            Exp::Replace(&[(
                "steps = 20\nbatch_size = 32\nlr = 1e-3\ncheckpoint_every = 10\n\n# Measured",
                "\n# Measured",
            )]),
            &[
                "key `stages.clf.steps`: missing",
                "key `stages.clf.batch_size`: missing",
                "key `stages.clf.lr`: missing",
            ],
        ),
        c(
            "key of another stage kind",
            Exp::Replace(&[(
                "eval_images = 200\n\n[stages.ldm]",
                "eval_images = 200\nema_decay = 0.9\n\n[stages.ldm]",
            )]),
            &[
                "key `stages.vae.ema_decay`",
                "unknown key for `autoencoder` stages",
                "`diffusion` and `classifier`",
            ],
        ),
        c(
            "misspelt stage key",
            Exp::Replace(&[("keep_checkpoints = 2", "keep_checkpoint = 2")]),
            &[
                "key `stages.vae.keep_checkpoint`",
                "did you mean `keep_checkpoints`?",
            ],
        ),
        c(
            "empty stage name",
            Exp::Append(
                "[stages.\"\"]\nkind = \"classifier\"\nsteps = 1\nbatch_size = 2\nlr = 1e-3",
            ),
            &["exp.toml", "cannot name a stage"],
        ),
        c(
            "stage name with a space",
            Exp::Append(
                "[stages.\"a b\"]\nkind = \"classifier\"\nsteps = 1\nbatch_size = 2\nlr = 1e-3",
            ),
            &["key `stages.\"a b\"`", "cannot name a stage"],
        ),
        c(
            "misspelt stage in needs",
            Exp::Replace(&[("needs = [\"vae\"]", "needs = [\"vea\"]")]),
            &[
                "key `stages.ldm.needs`",
                "needs `vea`",
                "did you mean `vae`?",
            ],
        ),
        c(
            "stages that need each other",
            Exp::Replace(&[("needs = [\"vae\"]", "needs = [\"sample\"]")]),
            &["key `stages.", "stages form a cycle"],
        ),
        c(
            "needs of the wrong kind",
            Exp::Replace(&[("needs = [\"ldm\"]\nsampler", "needs = [\"vae\"]\nsampler")]),
            &[
                "key `stages.sample.needs`",
                "a `sample` stage needs one `diffusion` stage",
            ],
        ),
        c(
            "eval without its classifier",
            Exp::Replace(&[("needs = [\"ldm\", \"clf\"]", "needs = [\"ldm\"]")]),
            &["key `stages.eval.needs`", "one `classifier` stage"],
        ),
        c(
            "no stages",
            Exp::Whole(b"[experiment]\nname = \"x\"\n[stages]\n"),
            &["key `stages`", "no stages"],
        ),
        c(
            "experiment name with a slash",
            Exp::Replace(&[("name = \"smoke\"", "name = \"a/b\"")]),
            &["key `experiment.name`", "cannot name a run folder"],
        ),
        c(
            "experiment named like the Slurm folder",
            Exp::Replace(&[("name = \"smoke\"", "name = \"slurm\"")]),
            &["key `experiment.name`", "Slurm job scripts"],
        ),
        c(
            "warm-up longer than the stage",
            Exp::Replace(&[(
                "lr = 1e-3\ncheckpoint_every = 10\nkeep",
                "lr = 1e-3\nwarmup_steps = 100\ncheckpoint_every = 10\nkeep",
            )]),
            &[
                "key `stages.vae.warmup_steps`",
                "more than the stage's 30 steps",
            ],
        ),
        c(
            "keep_best without eval_every",
            Exp::Replace(&[(
                "ema_decay = 0.99",
                "ema_decay = 0.99\nkeep_best = \"held_out/loss\"",
            )]),
            &["key `stages.ldm.keep_best`", "set eval_every"],
        ),
        c(
            "keep_best of a metric the stage does not measure",
            Exp::Replace(&[(
                "ema_decay = 0.99",
                "ema_decay = 0.99\neval_every = 10\nkeep_best = \"held_out/psnr\"",
            )]),
            &[
                "key `stages.ldm.keep_best`",
                "expected one of: held_out/loss",
            ],
        ),
        c(
            "a classifier among a diffusion stage's needs without eval_every",
            Exp::Replace(&[("needs = [\"vae\"]", "needs = [\"vae\", \"clf\"]")]),
            &[
                "key `stages.ldm.eval_every`",
                "needs the classifier stage `clf`, which judges its samples",
                "remove `clf` from stages.ldm.needs",
            ],
        ),
        c(
            "keep_best of a judged metric without a classifier to judge",
            Exp::Replace(&[(
                "ema_decay = 0.99",
                "ema_decay = 0.99\neval_every = 10\nkeep_best = \"held_out/frechet\"",
            )]),
            &[
                "key `stages.ldm.keep_best`",
                "`held_out/frechet` is measured only by a diffusion stage that needs a classifier",
            ],
        ),
        c(
            "keep_best of the judged accuracy of an unconditional model",
            Exp::Replace(&[
                ("needs = [\"vae\"]", "needs = [\"vae\", \"clf\"]"),
                (
                    "ema_decay = 0.99",
                    "ema_decay = 0.99\neval_every = 10\nkeep_best = \"held_out/accuracy\"",
                ),
                ("kind = \"text\"", "kind = \"none\""),
            ]),
            &[
                "key `stages.ldm.keep_best`",
                "`held_out/accuracy` needs prompts",
            ],
        ),
        c(
            "one judged sample",
            Exp::Replace(&[
                ("needs = [\"vae\"]", "needs = [\"vae\", \"clf\"]"),
                (
                    "ema_decay = 0.99",
                    "ema_decay = 0.99\neval_every = 10\njudge_samples = 1",
                ),
            ]),
            &["key `stages.ldm.judge_samples`", "must be at least 2"],
        ),
        c(
            "a diffusion stage that needs two classifiers",
            Exp::Replace(&[
                ("needs = [\"vae\"]", "needs = [\"vae\", \"clf\", \"clf2\"]"),
                (
                    "[logging]",
                    "[stages.clf2]\nkind = \"classifier\"\nsteps = 5\nbatch_size = 8\nlr = 1e-3\n\n[logging]",
                ),
            ]),
            &[
                "stages.ldm",
                "(and optionally one `classifier` stage), but `needs` lists",
            ],
        ),
        c(
            "no held-out images",
            Exp::Replace(&[(
                "eval_images = 200\n\n[stages.ldm]",
                "eval_images = 200\neval_every = 10\nheld_out_images = 0\n\n[stages.ldm]",
            )]),
            &["key `stages.vae.held_out_images`", "must be at least 1"],
        ),
        c(
            "held-out keys on a classifier",
            Exp::Replace(&[("steps = 20\n", "steps = 20\neval_every = 5\n")]),
            &[
                "key `stages.clf.eval_every`",
                "it is a setting of `autoencoder` and `diffusion` stages",
            ],
        ),
        c(
            "checkpoint best of a stage that keeps none",
            Exp::Replace(&[(
                "[stages.sample]\nkind = \"sample\"",
                "[stages.sample]\nkind = \"sample\"\ncheckpoint = \"best\"",
            )]),
            &["key `stages.sample.checkpoint`", "set stages.ldm.keep_best"],
        ),
        c(
            "checkpoint of a step the rotation deletes",
            Exp::Replace(&[(
                "[stages.sample]\nkind = \"sample\"",
                "[stages.sample]\nkind = \"sample\"\ncheckpoint = 10",
            )]),
            &[
                "key `stages.sample.checkpoint`",
                "keeps no checkpoint of step 10",
                "keeps steps 20, 30",
            ],
        ),
        c(
            "checkpoint named by a word",
            Exp::Replace(&[(
                "[stages.sample]\nkind = \"sample\"",
                "[stages.sample]\nkind = \"sample\"\ncheckpoint = \"newest\"",
            )]),
            &[
                "stages.sample.checkpoint",
                "expected \"last\", \"best\" or a step number",
            ],
        ),
        c(
            "checkpoint of a negative step",
            Exp::Replace(&[(
                "[stages.eval]\nkind = \"eval\"",
                "[stages.eval]\nkind = \"eval\"\ncheckpoint = -5",
            )]),
            &["stages.eval.checkpoint", "step -5 is negative"],
        ),
        c(
            "no checkpoints kept",
            Exp::Replace(&[("keep_checkpoints = 2", "keep_checkpoints = 0")]),
            &["key `stages.vae.keep_checkpoints`", "must be at least 1"],
        ),
        c(
            "one eval sample",
            Exp::Replace(&[("samples = 64", "samples = 1")]),
            &["key `stages.eval.samples`", "at least 2"],
        ),
        c(
            "a grid too large to draw",
            Exp::Replace(&[("grid_size = 8", "grid_size = 1000")]),
            &["key `logging.grid_size`", "expected at most 32"],
        ),
        c(
            "logging every 0 steps",
            Exp::Replace(&[("log_every = 5", "log_every = 0")]),
            &["key `logging.log_every`", "must be at least 1"],
        ),
        c(
            "discriminator that never starts",
            Exp::Replace(&[(
                "eval_images = 200\n\n[stages.ldm]",
                "eval_images = 200\ndisc_weight = 0.5\ndisc_start = 30\n\n[stages.ldm]",
            )]),
            &["key `stages.vae.disc_start`", "never trains"],
        ),
        c(
            "missing base file",
            Exp::Whole(b"extends = \"base.toml\"\n"),
            &["base.toml does not exist"],
        ),
        c(
            "extends that is not a path",
            Exp::Whole(b"extends = 3\n"),
            &["key `extends`", "expected a string"],
        ),
        c(
            "unknown data set",
            Exp::Replace(&[("name = \"mnist\"", "name = \"cifar\"")]),
            &[
                "key `dataset.name`",
                "unknown value `cifar`",
                "fashion_mnist",
            ],
        ),
        c(
            "colour MNIST",
            Exp::Replace(&[("image_size = 32", "image_size = 32\nchannels = 3")]),
            &[
                "key `dataset.channels`",
                "mnist images have 1 channel, not 3",
            ],
        ),
        c(
            "image folder without its folder",
            Exp::Replace(&[("name = \"mnist\"", "name = \"image_folder\"")]),
            &["key `dataset.root`", "set dataset.root"],
        ),
        c(
            "image folder that does not exist",
            Exp::Replace(&[(
                "name = \"mnist\"",
                "name = \"image_folder\"\nroot = \"pictures\"",
            )]),
            &["key `dataset.root`", "pictures"],
        ),
        c(
            "device that is not one",
            Exp::Replace(&[("device = \"cpu\"", "device = \"gpu\"")]),
            &[
                "key `experiment.device`",
                "`gpu` is not a device",
                "cuda:<index>",
            ],
        ),
        c(
            "device index that is not a number",
            Exp::Replace(&[("device = \"cpu\"", "device = \"cuda:x\"")]),
            &["key `experiment.device`", "`cuda:x` is not a device"],
        ),
        c(
            "a batch that cannot fit in memory",
            Exp::Replace(&[(
                "steps = 30\nbatch_size = 16",
                "steps = 30\nbatch_size = 1000000",
            )]),
            &["key `stages.vae.batch_size`", "GiB", "available"],
        ),
        c(
            "networks that cannot fit in memory",
            Exp::Replace(&[("model_channels = 32", "model_channels = 8192")]),
            &["key `stages.ldm.batch_size`", "stage `ldm` needs", "GiB"],
        ),
    ]
}

/// Cases on the files an experiment names.
fn referenced_file_cases() -> Vec<Case> {
    let c = |name, exp, files, expect| Case {
        name,
        exp,
        files,
        args: RUN,
        env: &[],
        expect,
        prepare: None,
        with_run: false,
    };
    const PROMPTS: Exp = Exp::Replace(&[(
        "guidance = 2.0\nprompts_file = \"sample_prompts.txt\"\n\n[stages.sample]",
        "guidance = 2.0\nprompts_file = \"p.txt\"\n\n[stages.sample]",
    )]);
    const LPIPS: Exp = Exp::Replace(&[(
        "eval_images = 200\n\n[stages.ldm]",
        "eval_images = 200\nperceptual_weight = 1.0\nlpips_weights = \"lpips.safetensors\"\n\n[stages.ldm]",
    )]);
    vec![
        c(
            "missing prompt file",
            PROMPTS,
            &[],
            &["key `stages.ldm.prompts_file`", "p.txt does not exist"],
        ),
        c(
            "empty prompt file",
            PROMPTS,
            &[("p.txt", b" \n")],
            &["key `stages.ldm.prompts_file`", "holds no prompts"],
        ),
        c(
            "prompt file not UTF-8",
            PROMPTS,
            &[("p.txt", b"one \xff")],
            &["key `stages.ldm.prompts_file`", "not UTF-8"],
        ),
        c(
            "unknown word in a prompt file",
            PROMPTS,
            &[("p.txt", b"one eleven")],
            &[
                "key `stages.ldm.prompts_file`",
                "unknown word `eleven`",
                "known words: zero, one",
            ],
        ),
        Case {
            prepare: Some(|dir, _| std::fs::create_dir(dir.join("p.txt")).unwrap()),
            ..c(
                "prompt file that is a folder",
                PROMPTS,
                &[],
                &[
                    "key `stages.ldm.prompts_file`",
                    "p.txt is not a regular file",
                ],
            )
        },
        c(
            "missing LPIPS weights",
            LPIPS,
            &[],
            &[
                "key `stages.vae.lpips_weights`",
                "lpips.safetensors does not exist",
            ],
        ),
        c(
            "LPIPS weights that are not safetensors",
            LPIPS,
            &[("lpips.safetensors", b"not safetensors")],
            &[
                "key `stages.vae.lpips_weights`",
                "cannot read it as safetensors",
            ],
        ),
        c(
            "perceptual term without weights",
            Exp::Replace(&[(
                "eval_images = 200\n\n[stages.ldm]",
                "eval_images = 200\nperceptual_weight = 1.0\n\n[stages.ldm]",
            )]),
            &[],
            &["key `stages.vae.perceptual_weight`", "needs LPIPS weights"],
        ),
        c(
            "CLIP without its files",
            Exp::Replace(&[("kind = \"text\"", "kind = \"clip\"")]),
            &[],
            &[
                "key `conditioning.clip_weights`",
                "key `conditioning.clip_tokenizer`",
            ],
        ),
        c(
            "CLIP weights that are not safetensors",
            Exp::Replace(&[(
                "kind = \"text\"",
                "kind = \"clip\"\nclip_weights = \"w.safetensors\"\nclip_tokenizer = \"t.json\"",
            )]),
            &[("w.safetensors", b"garbage"), ("t.json", b"{}")],
            &[
                "key `conditioning.clip_weights`",
                "cannot read it as safetensors",
            ],
        ),
    ]
}

/// Cases on `--set`, `--device`, the environment, patterns and commands.
fn argument_cases() -> Vec<Case> {
    let c = |name, args, env, expect| Case {
        name,
        exp: Exp::Smoke,
        files: &[],
        args,
        env,
        expect,
        prepare: None,
        with_run: false,
    };
    vec![
        c(
            "--set without a value",
            &["{exp}", "--runs-dir", "{runs}", "--set", "stages.vae.lr"],
            &[],
            &["--set stages.vae.lr", "expected KEY=VALUE"],
        ),
        c(
            "--set of an unknown key",
            &["{exp}", "--runs-dir", "{runs}", "--set", "stages.vae.lrr=1"],
            &[],
            &[
                "`--set stages.vae.lrr=1`",
                "key `stages.vae.lrr`",
                "did you mean `lr`?",
            ],
        ),
        c(
            "--set of a wrong type",
            &[
                "{exp}",
                "--runs-dir",
                "{runs}",
                "--set",
                "autoencoder.ch=[1]",
            ],
            &[],
            &[
                "`--set autoencoder.ch=[1]`",
                "key `autoencoder.ch`",
                "expected a non-negative integer",
            ],
        ),
        c(
            "--set with an empty part",
            &["{exp}", "--runs-dir", "{runs}", "--set", "stages..lr=1"],
            &[],
            &["--set stages..lr=1", "dotted path"],
        ),
        c(
            "--set of an out-of-range value",
            &[
                "{exp}",
                "--runs-dir",
                "{runs}",
                "--set",
                "stages.ldm.ema_decay=1.5",
            ],
            &[],
            &[
                "`--set stages.ldm.ema_decay=1.5`",
                "key `stages.ldm.ema_decay`",
                "expected 0 <= value < 1",
            ],
        ),
        c(
            "--device that is not one",
            &["{exp}", "--runs-dir", "{runs}", "--device", "tpu"],
            &[],
            &["--device", "`tpu` is not a device"],
        ),
        c(
            "misspelt data variable",
            RUN,
            &[("LDM_DATADIR", "/x")],
            &["`LDM_DATADIR`", "did you mean `LDM_DATA_DIR`?"],
        ),
        c(
            "variable of no key",
            RUN,
            &[("LDM_STAGES_VAE_LR", "1")],
            &["`LDM_STAGES_VAE_LR`", "LDM_<SECTION>__<KEY>"],
        ),
        c(
            "non-UTF-8 override value",
            RUN,
            &[],
            &["`LDM_STAGES__VAE__LR`", "not valid UTF-8"],
        ),
        c(
            "override of the wrong type",
            RUN,
            &[("LDM_AUTOENCODER__CH", "wide")],
            &[
                "environment variable `LDM_AUTOENCODER__CH`",
                "key `autoencoder.ch`",
                "expected a non-negative integer",
            ],
        ),
        c(
            "override of an unknown key",
            RUN,
            &[("LDM_STAGES__VAE__LRR", "1")],
            &[
                "environment variable `LDM_STAGES__VAE__LRR`",
                "did you mean `lr`?",
            ],
        ),
        c(
            "pattern that matches nothing",
            &["{dir}/*.tomlx", "--runs-dir", "{runs}"],
            &[],
            &["matches no file"],
        ),
        c(
            "misspelt command",
            &["pln", "{exp}"],
            &[],
            &["`pln`", "did you mean `ldm-run plan`?"],
        ),
        c(
            "unknown member",
            &["{exp}", "--runs-dir", "{runs}", "--member", "smok"],
            &[],
            &["--member smok", "did you mean `smoke`?"],
        ),
        c(
            "the same experiment twice",
            &["{exp}", "{exp}", "--runs-dir", "{runs}"],
            &[],
            &["both name experiment `smoke`"],
        ),
        c(
            "plan of a bad experiment",
            &["plan", "{exp}", "--set", "autoencoder.ch=0"],
            &[],
            &[
                "key `autoencoder.ch`",
                "must be at least 1",
                "nothing was planned",
            ],
        ),
        c(
            "ls of a folder that does not exist",
            &["ls", "{dir}/nothing"],
            &[],
            &["nothing is not a folder of runs", "does not exist"],
        ),
        c(
            "ls of a file",
            &["ls", "{exp}"],
            &[],
            &["exp.toml is not a folder of runs"],
        ),
    ]
}

/// Cases on sweeps.
fn sweep_cases() -> Vec<Case> {
    let c = |name, exp, args, expect| Case {
        name,
        exp,
        files: &[],
        args,
        env: &[],
        expect,
        prepare: None,
        with_run: false,
    };
    vec![
        c(
            "sweep of no values",
            Exp::Append("[sweep]\n\"stages.ldm.lr\" = []"),
            RUN,
            &["exp.toml", "lists no values"],
        ),
        c(
            "sweep of an unknown key",
            Exp::Append("[sweep]\n\"stages.ldm.lrr\" = [1e-4]"),
            RUN,
            &["key `stages.ldm.lrr`", "did you mean `lr`?", "sweep member"],
        ),
        c(
            "sweep of a bad value",
            Exp::Append("[sweep]\n\"stages.ldm.lr\" = [1e-4, -1.0]"),
            RUN,
            &[
                "key `stages.ldm.lr`",
                "-1 must be a positive number",
                "stages.ldm.lr = -1.0",
            ],
        ),
        c(
            "sweep too large",
            Exp::Append(
                "[sweep]\n\"stages.ldm.lr\" = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32]\n\"stages.ldm.steps\" = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32]",
            ),
            RUN,
            &["1024 members", "at most 1000"],
        ),
        c(
            "sweep members named alike",
            Exp::Append("[sweep]\n\"stages.ldm.lr\" = [1e-4, 0.0001]"),
            RUN,
            &["both named `smoke-lr0.0001`"],
        ),
        c(
            "plan of a sweep with a bad member",
            Exp::Append("[sweep]\n\"stages.ldm.batch_size\" = [8, 0]"),
            &["plan", "{exp}"],
            &[
                "key `stages.ldm.batch_size`",
                "must be at least 1",
                "sweep member",
            ],
        ),
        c(
            "submit of a sweep with a bad member",
            Exp::Append("[sweep]\n\"stages.ldm.batch_size\" = [8, 0]"),
            &[
                "submit",
                "--slurm",
                "--dry-run",
                "{exp}",
                "--runs-dir",
                "{runs}",
            ],
            &["key `stages.ldm.batch_size`", "nothing was submitted"],
        ),
    ]
}

/// Cases on resuming and sampling a finished run (copied into the case's runs folder).
/// A captioned image folder `pictures/` (4 training and 2 test pictures, classes from the
/// `group` column) and a prompt file of its captions, for the captioned cases to break.
fn pictures(dir: &Path, _: Option<&Path>) {
    for (split, rows) in [
        (
            "train",
            &[
                ("a", "red apple", "fruit"),
                ("b", "green apple", "fruit"),
                ("c", "red heart", "heart"),
                ("d", "blue heart", "heart"),
            ][..],
        ),
        (
            "test",
            &[("e", "red heart", "heart"), ("f", "green apple", "fruit")][..],
        ),
    ] {
        let folder = dir.join("pictures").join(split);
        std::fs::create_dir_all(&folder).unwrap();
        let mut metadata = String::new();
        for (i, (name, caption, group)) in rows.iter().enumerate() {
            image::RgbImage::from_pixel(8, 8, image::Rgb([40 * i as u8, 200, 90]))
                .save(folder.join(format!("{name}.png")))
                .unwrap();
            metadata.push_str(&format!(
                "{{\"file_name\": \"{name}.png\", \"text\": \"{caption}\", \"group\": \"{group}\"}}\n"
            ));
        }
        std::fs::write(folder.join("metadata.jsonl"), metadata).unwrap();
    }
    std::fs::write(dir.join("sample_prompts.txt"), "red apple\nblue heart\n").unwrap();
}

/// Replaces `from` by `to` in the file at `path` under `dir` (it must be there).
fn edit(dir: &Path, path: &str, from: &str, to: &str) {
    let path = dir.join(path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn pictures_row_without_caption(dir: &Path, run: Option<&Path>) {
    pictures(dir, run);
    edit(
        dir,
        "pictures/train/metadata.jsonl",
        "\"text\": \"green apple\", ",
        "",
    );
}

fn pictures_missing_image(dir: &Path, run: Option<&Path>) {
    pictures(dir, run);
    edit(dir, "pictures/train/metadata.jsonl", "c.png", "z.png");
}

fn pictures_unreadable_image(dir: &Path, run: Option<&Path>) {
    pictures(dir, run);
    std::fs::write(dir.join("pictures/train/b.png"), b"not a picture").unwrap();
}

fn pictures_missing_test_image(dir: &Path, run: Option<&Path>) {
    pictures(dir, run);
    std::fs::remove_file(dir.join("pictures/test/e.png")).unwrap();
}

fn pictures_unknown_prompt_word(dir: &Path, run: Option<&Path>) {
    pictures(dir, run);
    std::fs::write(dir.join("sample_prompts.txt"), "red apple\npurple heart\n").unwrap();
}

fn digit_prompts(dir: &Path, _: Option<&Path>) {
    std::fs::write(dir.join("sample_prompts.txt"), "0 1 2 3\n").unwrap();
}

/// The smoke experiment on `pictures/` with a word-level tokenizer learned from its captions.
const CAPTIONED: &[(&str, &str)] = &[
    (
        "name = \"mnist\"",
        "name = \"image_folder\"\nroot = \"pictures\"\nchannels = 3\nlabel_column = \"group\"",
    ),
    (
        "max_tokens = 2",
        "max_tokens = 2\ntokenizer = \"word_level\"",
    ),
];

/// Cases on captioned folders, CIFAR-10, flips, caption tokenizers and `ldm-run data`.
fn data_cases() -> Vec<Case> {
    let c = |name, exp, prepare, expect| Case {
        name,
        exp,
        files: &[],
        args: RUN,
        env: &[],
        expect,
        prepare: Some(prepare),
        with_run: false,
    };
    let command = |name, args, expect| Case {
        name,
        exp: Exp::Smoke,
        files: &[],
        args,
        env: &[],
        expect,
        prepare: None,
        with_run: false,
    };
    vec![
        c(
            "captioned folder with a row without a caption",
            Exp::Replace(CAPTIONED),
            pictures_row_without_caption,
            &[
                "pictures/train/metadata.jsonl, line 2",
                "the row of b.png has no caption (column `text`)",
            ],
        ),
        c(
            "captioned folder with a row naming a missing image",
            Exp::Replace(CAPTIONED),
            pictures_missing_image,
            &[
                "pictures/train/metadata.jsonl, line 3",
                "pictures/train/z.png does not exist",
                "nothing was written",
            ],
        ),
        c(
            "captioned folder with an unreadable image",
            Exp::Replace(CAPTIONED),
            pictures_unreadable_image,
            &[
                "pictures/train/metadata.jsonl, line 2",
                "pictures/train/b.png is not a readable PNG or JPEG image",
                "nothing was written",
            ],
        ),
        c(
            "captioned folder with a test image missing",
            Exp::Replace(CAPTIONED),
            pictures_missing_test_image,
            &[
                "pictures/test/metadata.jsonl, line 1",
                "pictures/test/e.png does not exist",
            ],
        ),
        c(
            "word-level prompt file with a word no caption has",
            Exp::Replace(CAPTIONED),
            pictures_unknown_prompt_word,
            &[
                "key `stages.ldm.prompts_file`",
                "unknown word `purple` in prompt \"purple heart\"",
                "known words: ",
                "(5 words in all)",
            ],
        ),
        c(
            "caption tokenizer on a data set without captions",
            Exp::Replace(&[("max_tokens = 2", "max_tokens = 2\ntokenizer = \"bpe\"")]),
            digit_prompts,
            &[
                "key `conditioning.tokenizer`",
                "the bpe tokenizer learns from captions, and the data set has none",
            ],
        ),
        c(
            "flipped digits",
            Exp::Replace(&[("image_size = 32", "image_size = 32\nflip = true")]),
            digit_prompts,
            &["key `dataset.flip`", "a mirrored digit is not one"],
        ),
        c(
            "CIFAR-10 that is not there, downloads off",
            Exp::Replace(&[(
                "name = \"mnist\"",
                "name = \"cifar10\"\nchannels = 3\ndownload = false",
            )]),
            digit_prompts,
            &[
                "cifar-10-binary.tar.gz (or the files it holds) not found",
                "dataset.download = false",
                "nothing was written",
            ],
        ),
        command(
            "data emoji without its font",
            &["data", "emoji", "{dir}/emoji", "--font", "{dir}/none.ttf"],
            &[
                "none.ttf does not exist",
                "fonts-noto-color-emoji",
                "--font",
            ],
        ),
        command(
            "data emoji into a folder that is not empty",
            &["data", "emoji", "{dir}"],
            &["exists and is not empty", "choose a new folder"],
        ),
    ]
}

fn run_cases() -> Vec<Case> {
    let c = |name, args, expect| Case {
        name,
        exp: Exp::Smoke,
        files: &[],
        args,
        env: &[],
        expect,
        prepare: None,
        with_run: true,
    };
    vec![
        Case {
            prepare: Some(interrupted),
            ..c(
                "resume with a changed training setting",
                &[
                    "--resume",
                    "{run}",
                    "--runs-dir",
                    "{runs}",
                    "--set",
                    "stages.vae.lr=0.5",
                ],
                &[
                    "refusing to resume",
                    "stages.vae.lr: 0.001 -> 0.5",
                    "--force",
                ],
            )
        },
        Case {
            prepare: Some(edit_config),
            ..c(
                "resume of a run whose config.toml was edited",
                &["--resume", "{run}", "--runs-dir", "{runs}"],
                &["config.toml was edited", "stages.clf.lr: 0.001 -> 0.002"],
            )
        },
        Case {
            prepare: Some(damage_manifest),
            ..c(
                "resume of a run with a damaged manifest",
                &["--resume", "{run}", "--runs-dir", "{runs}"],
                &["manifest.json is not a valid ldm-run manifest"],
            )
        },
        Case {
            prepare: Some(damage_manifest),
            ..c(
                "resume latest when the newest run is damaged",
                &["{exp}", "--resume", "latest", "--runs-dir", "{runs}"],
                &["is damaged", "move the damaged one away"],
            )
        },
        c(
            "resume of a folder that does not exist",
            &["--resume", "{dir}/nope"],
            &["nope is not an ldm-run run folder"],
        ),
        c(
            "resume of a folder without a manifest",
            &["--resume", "{dir}/data"],
            &["data is not an ldm-run run folder"],
        ),
        c(
            "resume latest without the file",
            &["--resume", "latest", "--runs-dir", "{runs}"],
            &["--resume latest needs the experiment file"],
        ),
        c(
            "resume latest with nothing unfinished",
            &["{exp}", "--resume", "latest", "--runs-dir", "{runs}"],
            &["no unfinished run of experiment `smoke`"],
        ),
        c(
            "sample of a folder that does not exist",
            &["sample", "{dir}/nope", "--prompts", "one"],
            &["nope is not a folder"],
        ),
        c(
            "sample with zero steps",
            &["sample", "{run}", "--prompts", "one", "--steps", "0"],
            &["--steps: must be at least 1", "nothing was written"],
        ),
        c(
            "sample from a best checkpoint never kept",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--checkpoint",
                "best",
            ],
            &["stage `ldm` kept no best checkpoint", "keep_best"],
        ),
        c(
            "sample from a step with no checkpoint",
            &["sample", "{run}", "--prompts", "one", "--checkpoint", "7"],
            &["stage `ldm` has no checkpoint of step 7; it kept steps 20, 30"],
        ),
        c(
            "sample from a checkpoint named by a word",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--checkpoint",
                "newest",
            ],
            &[
                "--checkpoint",
                "expected \"last\", \"best\" or a step number",
            ],
        ),
        c(
            "sample with a negative eta",
            &["sample", "{run}", "--prompts", "one", "--eta", "-1"],
            &["--eta: -1 is out of range"],
        ),
        c(
            "sample with guidance nan",
            &["sample", "{run}", "--prompts", "one", "--guidance", "nan"],
            &["--guidance: NaN is out of range"],
        ),
        c(
            "sample with more steps than timesteps",
            &["sample", "{run}", "--prompts", "one", "--steps", "5000"],
            &["--steps: 5000 is out of range"],
        ),
        c(
            "sample of no prompts",
            &["sample", "{run}", "--prompts", "  "],
            &["--prompts holds no prompts"],
        ),
        c(
            "sample of an unknown word",
            &["sample", "{run}", "--prompts", "one eleven"],
            &["unknown word `eleven`", "known words"],
        ),
        c(
            "sample into a JPEG",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--out",
                "{dir}/x.jpg",
            ],
            &["--out", "ending in .png"],
        ),
        c(
            "sample into a missing folder",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--out",
                "{dir}/no/x.png",
            ],
            &["does not exist"],
        ),
        c(
            "sample of a stage that is not there",
            &["sample", "{run}", "--prompts", "one", "--stage", "lmd"],
            &["--stage lmd", "did you mean `ldm`?"],
        ),
        c(
            "sample with a prompt file that is missing",
            &["sample", "{run}", "--prompts-file", "{dir}/none.txt"],
            &["cannot read prompt file"],
        ),
    ]
}

/// The eval stage's sampler keys in smoke.toml, to edit.
const EVAL_SAMPLER: &str = "sampler_steps = 5\nguidance = 2.0\nsamples";

/// Cases on the samplers and training objectives: their ranges, their combinations (checked
/// where both values are known), sweeps of samplers, and `sample`'s flags for them.
fn sampler_cases() -> Vec<Case> {
    let c = file_case;
    let sample = |name, args, expect| Case {
        with_run: true,
        args,
        ..c(name, Exp::Smoke, expect)
    };
    vec![
        c(
            "zero terminal SNR with epsilon prediction",
            Exp::Replace(&[(
                "timesteps = 1000",
                "timesteps = 1000\nzero_terminal_snr = true",
            )]),
            &[
                "exp.toml",
                "key `schedule.zero_terminal_snr`",
                "prediction = \"v\"",
            ],
        ),
        c(
            "zero terminal SNR with x0 prediction",
            Exp::Replace(&[(
                "timesteps = 1000",
                "timesteps = 1000\nprediction = \"x0\"\nzero_terminal_snr = true",
            )]),
            &[
                "key `schedule.zero_terminal_snr`",
                "Min-SNR weight",
                "prediction = \"v\"",
            ],
        ),
        c(
            "zero terminal SNR over one timestep",
            Exp::Replace(&[(
                "timesteps = 1000",
                "timesteps = 1\nprediction = \"v\"\nzero_terminal_snr = true",
            )]),
            &[
                "key `schedule.zero_terminal_snr`",
                "needs at least 2 timesteps",
            ],
        ),
        c(
            "Karras sigmas on a zero terminal SNR schedule",
            Exp::Replace(&[
                (
                    "timesteps = 1000",
                    "timesteps = 1000\nprediction = \"v\"\nzero_terminal_snr = true",
                ),
                (
                    "sampler = \"ddim\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
                    "sampler = \"euler\"\nsigmas = \"karras\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
                ),
            ]),
            &[
                "key `stages.eval.sigmas`",
                "zero_terminal_snr makes infinite",
                "trailing",
            ],
        ),
        c(
            "Karras sigmas with DDIM",
            Exp::Replace(&[(
                EVAL_SAMPLER,
                "sigmas = \"karras\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
            )]),
            &["key `stages.eval.sigmas`", "ddim steps between"],
        ),
        c(
            "eta with a sampler other than DDIM",
            Exp::Replace(&[(
                "sampler = \"ddim\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
                "sampler = \"dpmpp_2m\"\neta = 0.5\nsampler_steps = 5\nguidance = 2.0\nsamples",
            )]),
            &[
                "key `stages.eval.eta`",
                "applies to ddim only, not dpmpp_2m",
            ],
        ),
        c(
            "DDPM with a spacing",
            Exp::Replace(&[(
                "[stages.sample]\nkind = \"sample\"\nneeds = [\"ldm\"]\nsampler = \"ddim\"",
                "[stages.sample]\nkind = \"sample\"\nneeds = [\"ldm\"]\nsampler = \"ddpm\"\nspacing = \"trailing\"",
            )]),
            &["key `stages.sample.spacing`", "ddpm visits every timestep"],
        ),
        c(
            "unknown spacing",
            Exp::Replace(&[(
                EVAL_SAMPLER,
                "spacing = \"trailng\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
            )]),
            &[
                "key `stages.eval.spacing`",
                "unknown value `trailng`",
                "trailing",
            ],
        ),
        c(
            "guidance rescale above 1",
            Exp::Replace(&[(
                EVAL_SAMPLER,
                "guidance_rescale = 1.5\nsampler_steps = 5\nguidance = 2.0\nsamples",
            )]),
            &[
                "key `stages.eval.guidance_rescale`",
                "expected 0 <= guidance_rescale <= 1",
            ],
        ),
        c(
            "negative noise offset",
            Exp::Replace(&[(
                "ema_decay = 0.99\n",
                "ema_decay = 0.99\nnoise_offset = -0.1\n",
            )]),
            &[
                "key `stages.ldm.noise_offset`",
                "expected 0 <= noise_offset <= 1",
            ],
        ),
        c(
            "input perturbation of 1",
            Exp::Replace(&[(
                "ema_decay = 0.99\n",
                "ema_decay = 0.99\ninput_perturbation = 1.0\n",
            )]),
            &[
                "key `stages.ldm.input_perturbation`",
                "expected 0 <= input_perturbation < 1",
            ],
        ),
        c(
            "noise offset on an eval stage",
            Exp::Replace(&[(
                EVAL_SAMPLER,
                "noise_offset = 0.1\nsampler_steps = 5\nguidance = 2.0\nsamples",
            )]),
            &[
                "key `stages.eval.noise_offset`",
                "unknown key for `eval` stages",
                "`diffusion`",
            ],
        ),
        c(
            "every problem of the samplers at once",
            Exp::Replace(&[
                (
                    "timesteps = 1000",
                    "timesteps = 1000\nzero_terminal_snr = true",
                ),
                (
                    EVAL_SAMPLER,
                    "sigmas = \"karras\"\nsampler_steps = 5\nguidance = 2.0\nsamples",
                ),
                (
                    "ema_decay = 0.99\n",
                    "ema_decay = 0.99\nnoise_offset = 2.0\n",
                ),
            ]),
            &[
                "key `schedule.zero_terminal_snr`",
                "key `stages.eval.sigmas`",
                "key `stages.ldm.noise_offset`",
            ],
        ),
        c(
            "sampler sweep entry with Karras sigmas and DDIM",
            Exp::Replace(&[(
                "guidance_sweep = [1.0]",
                "guidance_sweep = [1.0]\nsampler_sweep = [{ sampler = \"euler\", sampler_steps = 4 }, { sampler = \"ddim\", sampler_steps = 0, sigmas = \"karras\" }]",
            )]),
            &[
                "file exp.toml",
                "key `stages.eval.sampler_sweep[1].sampler_steps`",
                "key `stages.eval.sampler_sweep[1].sigmas`",
                "ddim steps between",
            ],
        ),
        c(
            "sampler sweep entry listed twice",
            Exp::Replace(&[(
                "guidance_sweep = [1.0]",
                "guidance_sweep = [1.0]\nsampler_sweep = [{ sampler = \"unipc\", sampler_steps = 4 }, { sampler = \"unipc\", sampler_steps = 4, spacing = \"linspace\" }]",
            )]),
            &[
                "key `stages.eval.sampler_sweep[1]`",
                "repeats sampler_sweep[0] (unipc_4)",
            ],
        ),
        c(
            "sampler sweep entry without its steps",
            Exp::Replace(&[(
                "guidance_sweep = [1.0]",
                "guidance_sweep = [1.0]\nsampler_sweep = [{ sampler = \"heun\" }]",
            )]),
            &["stages.eval", "sampler_steps"],
        ),
        c(
            "sampler sweep entry with a guidance",
            Exp::Replace(&[(
                "guidance_sweep = [1.0]",
                "guidance_sweep = [1.0]\nsampler_sweep = [{ sampler = \"heun\", sampler_steps = 3, guidance = 4 }]",
            )]),
            &["stages.eval", "guidance"],
        ),
        Case {
            args: &[
                "{exp}",
                "--runs-dir",
                "{runs}",
                "--set",
                "schedule.zero_terminal_snr=\"yes\"",
            ],
            ..c(
                "zero terminal SNR that is not a boolean",
                Exp::Smoke,
                &["--set schedule.zero_terminal_snr", "bool"],
            )
        },
        Case {
            args: &[
                "{exp}",
                "--runs-dir",
                "{runs}",
                "--set",
                "stages.eval.sample_seed=-1",
            ],
            ..c(
                "negative sample seed",
                Exp::Smoke,
                &[
                    "--set stages.eval.sample_seed",
                    "key `stages.eval.sample_seed`",
                ],
            )
        },
        sample(
            "sample with eta for euler",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--sampler",
                "euler",
                "--eta",
                "0.5",
            ],
            &[
                "--eta: applies to ddim only, not euler",
                "nothing was written",
            ],
        ),
        sample(
            "sample with Karras sigmas for DDIM",
            &["sample", "{run}", "--prompts", "one", "--sigmas", "karras"],
            &["--sigmas: karras needs a sampler"],
        ),
        sample(
            "sample with DDPM and a spacing",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--sampler",
                "ddpm",
                "--spacing",
                "leading",
            ],
            &["--spacing: ddpm visits every timestep"],
        ),
        sample(
            "sample with a guidance rescale of 2",
            &[
                "sample",
                "{run}",
                "--prompts",
                "one",
                "--guidance-rescale",
                "2",
            ],
            &["--guidance-rescale: 2 is out of range"],
        ),
        sample(
            "sample with an unknown sampler",
            &["sample", "{run}", "--prompts", "one", "--sampler", "dpm"],
            &["invalid value 'dpm'", "dpmpp_2m", "unipc"],
        ),
    ]
}

#[test]
fn every_bad_input_is_refused_with_its_source_and_writes_nothing() {
    let cases: Vec<Case> = [
        file_cases(),
        referenced_file_cases(),
        argument_cases(),
        sweep_cases(),
        run_cases(),
        sampler_cases(),
        data_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let failed: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}
