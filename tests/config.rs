//! Experiment files: layering (extends, environment, --set) and every kind of bad input, each
//! with a message that names the source, the key and what was expected.

use std::path::{Path, PathBuf};

use std::ffi::OsString;

use ldm_run::config::{self, ConfigError, StageSpec};
use ldm_run::environment::Environment;
use ldm_run::plan::checks::MemoryCheck;
use ldm_run::plan::{Plan, Planning, RunIndex};

const BASE: &str = r#"
[experiment]
name = "t"
seed = 5

[stages.vae]
kind = "autoencoder"
steps = 10
batch_size = 4
lr = 1e-3

[stages.ldm]
kind = "diffusion"
needs = ["vae"]
steps = 20
batch_size = 8
lr = 2e-4
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn resolve(
    path: &Path,
    env: &[(&str, &str)],
    sets: &[&str],
) -> Result<config::Resolved, ConfigError> {
    let env = Environment::from_vars(
        env.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    )
    .unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    config::resolve(path, &env, &sets)
}

/// The plan of a new run (graph and file checks included), or its refusal.
fn planned(path: &Path, sets: &[&str]) -> Result<Plan, String> {
    let resolved = resolve(path, &[], sets).map_err(|e| e.to_string())?;
    let index = RunIndex::default();
    let planning = Planning {
        index: &index,
        reuse: true,
        memory: MemoryCheck::Skip,
    };
    Plan::new_run(resolved, &planning, &[]).map_err(|e| e.to_string())
}

fn error(path: &Path, env: &[(&str, &str)], sets: &[&str]) -> String {
    resolve(path, env, sets)
        .expect_err("should be refused")
        .to_string()
}

fn plan_error(path: &Path, sets: &[&str]) -> String {
    planned(path, sets).expect_err("should be refused")
}

fn lr_of(r: &config::Resolved, stage: &str) -> f64 {
    r.stage(stage).unwrap().spec.train().unwrap().lr
}

#[test]
fn layers_apply_in_order_base_file_env_set() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.toml",
        &BASE.replace("seed = 5", "seed = 1"),
    );
    let file = write(
        dir.path(),
        "exp.toml",
        "extends = \"base.toml\"\n[experiment]\nname = \"child\"\n[autoencoder]\nch = 64\n",
    );
    let r = resolve(&file, &[], &[]).unwrap();
    assert_eq!(r.experiment.experiment.name, "child");
    assert_eq!(r.experiment.experiment.seed, 1, "from the base");
    assert_eq!(
        r.experiment.autoencoder.ch, 64,
        "the file wins over the base"
    );
    assert_eq!(lr_of(&r, "vae"), 1e-3);

    let env = [
        ("LDM_STAGES__VAE__LR", "5e-4"),
        ("LDM_DATA_DIR", "/elsewhere"),
    ];
    let r = resolve(&file, &env, &[]).unwrap();
    assert_eq!(
        lr_of(&r, "vae"),
        5e-4,
        "env parsed as a float; LDM_DATA_DIR is not a key"
    );

    let r = resolve(
        &file,
        &env,
        &[
            "stages.vae.lr=1e-4",
            "autoencoder.ch_mult=[1, 2]",
            "autoencoder.attn_resolutions=[16]",
        ],
    )
    .unwrap();
    assert_eq!(lr_of(&r, "vae"), 1e-4, "--set wins over env and is a float");
    assert_eq!(r.experiment.autoencoder.ch_mult, vec![1, 2]);
    assert!(
        !r.to_toml().contains("extends"),
        "the resolved config is flat"
    );
}

#[test]
fn stages_come_in_dependency_order_with_defaults_filled() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let plan = planned(&file, &[]).unwrap();
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["vae", "ldm"]);
    let r = &plan.resolved;
    let StageSpec::Diffusion(ldm) = &r.stage("ldm").unwrap().spec else {
        panic!("ldm is a diffusion stage")
    };
    assert_eq!(ldm.ema.ema_decay, 0.999);
    assert_eq!(ldm.sampling.sampler_steps, 50);
    let text = r.to_toml();
    assert!(
        text.contains("kl_weight = 1e-6") || text.contains("kl_weight = 0.000001"),
        "{text}"
    );
    assert!(text.contains("ema_decay = 0.999"), "{text}");
}

#[test]
fn missing_file_is_an_error_not_a_default() {
    let err = error(Path::new("no/such/experiment.toml"), &[], &[]);
    assert!(
        err.contains("no/such/experiment.toml does not exist"),
        "{err}"
    );
}

#[test]
fn malformed_toml_gives_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.toml",
        "[experiment]\nname = \"t\"\nseed = = 3\n",
    );
    let err = error(&file, &[], &[]);
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(err.contains("malformed TOML"), "{err}");
}

#[test]
fn unknown_key_suggests_the_closest() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "e.toml",
        &format!("{BASE}\n[unet]\nmodel_chanels = 64\n"),
    );
    let err = error(&file, &[], &[]);
    assert!(
        err.contains("key `unet.model_chanels`: unknown key; did you mean `model_channels`?"),
        "{err}"
    );
    assert!(err.contains("e.toml"), "names the file: {err}");
}

#[test]
fn key_of_another_stage_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[], &["stages.vae.ema_decay=0.9"]);
    assert!(err.contains("`--set stages.vae.ema_decay=0.9`"), "{err}");
    assert!(
        err.contains("unknown key for `autoencoder` stages; it is a setting of `diffusion` and `classifier` stages"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_source_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[("LDM_AUTOENCODER__CH", "wide")], &[]);
    assert!(
        err.contains("environment variable `LDM_AUTOENCODER__CH`"),
        "{err}"
    );
    assert!(err.contains("key `autoencoder.ch`: wrong type"), "{err}");
    assert!(err.contains("expected a non-negative integer"), "{err}");
}

#[test]
fn set_of_a_key_that_does_not_exist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[], &["stages.vae.lrr=1"]);
    assert!(
        err.contains(
            "`--set stages.vae.lrr=1`: key `stages.vae.lrr`: unknown key; did you mean `lr`?"
        ),
        "{err}"
    );
    let err = error(&file, &[], &["stages.vae.lr"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
}

#[test]
fn out_of_range_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[], &["autoencoder.ch=0"]);
    assert!(
        err.contains("key `autoencoder.ch`: must be at least 1"),
        "{err}"
    );
    let err = error(&file, &[], &["autoencoder.ch=48"]);
    assert!(
        err.contains(
            "key `autoencoder.norm_groups`: GroupNorm cannot split the channel widths [48, 48]"
        ),
        "{err}"
    );
    let err = error(&file, &[], &["unet.latent_size=4"]);
    assert!(
        err.contains("key `unet.latent_size`: 4 does not match the autoencoder's latent side 8"),
        "{err}"
    );
    let err = error(&file, &[], &["unet.latent_channels=3"]);
    assert!(
        err.contains(
            "key `unet.latent_channels`: 3 does not match the autoencoder's latent channels"
        ),
        "{err}"
    );
    let err = error(&file, &[], &["unet.attention_resolutions=[3]"]);
    assert!(
        err.contains("resolution 3 is never reached; the UNet sees [8, 4, 2]"),
        "{err}"
    );
    let err = error(&file, &[], &["dataset.image_size=30"]);
    assert!(
        err.contains("dataset.image_size 30 is not divisible by 4"),
        "{err}"
    );
    let err = error(&file, &[], &["stages.ldm.lr=-1"]);
    assert!(
        err.contains("key `stages.ldm.lr`: -1 must be a positive number"),
        "{err}"
    );
    let err = error(&file, &[], &["schedule.min_snr_gamma=0"]);
    assert!(
        err.contains("key `schedule.min_snr_gamma`: 0 must be a positive number"),
        "{err}"
    );
}

#[test]
fn classifier_and_eval_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}\n[stages.clf]\nkind = \"classifier\"\nsteps = 5\nbatch_size = 8\nlr = 1e-3\n\
         [stages.ev]\nkind = \"eval\"\nneeds = [\"ldm\", \"clf\"]\n"
    );
    let file = write(dir.path(), "e.toml", &text);
    let r = resolve(&file, &[], &[]).unwrap();
    match &r.stage("ev").unwrap().spec {
        StageSpec::Eval(ev) => {
            assert_eq!((ev.measure.samples, ev.test.eval_images), (1000, 1000));
            assert!(ev.measure.guidance_sweep.is_empty());
            assert_eq!(ev.sampling.guidance, 3.0);
        }
        other => panic!("{other:?}"),
    }
    match &r.stage("clf").unwrap().spec {
        StageSpec::Classifier(clf) => {
            assert_eq!((clf.ema.ema_decay, clf.train.steps), (0.999, 5));
        }
        other => panic!("{other:?}"),
    }
    let err = error(&file, &[], &["stages.ev.samples=1"]);
    assert!(
        err.contains("key `stages.ev.samples`: must be at least 2"),
        "{err}"
    );
    let err = error(&file, &[], &["stages.ev.guidance_sweep=[1.0, -2.0]"]);
    assert!(
        err.contains("-2 is out of range; expected 0 <= guidance"),
        "{err}"
    );
    let err = plan_error(&file, &["stages.ev.needs=[\"ldm\"]"]);
    assert!(
        err.contains("needs one `diffusion` stage and one `classifier` stage"),
        "{err}"
    );
    let err = error(&file, &[], &["stages.clf.kl_weight=1.0"]);
    assert!(
        err.contains(
            "unknown key for `classifier` stages; it is a setting of `autoencoder` stages"
        ),
        "{err}"
    );
    let only = "[experiment]\nname = \"c\"\n[dataset]\nimage_size = 30\n\
                [stages.clf]\nkind = \"classifier\"\nsteps = 5\nbatch_size = 8\nlr = 1e-3\n";
    let file = write(dir.path(), "c.toml", only);
    let err = error(&file, &[], &[]);
    assert!(
        err.contains("30 is not a multiple of 4: the classifier of stage `clf` pools twice by 2"),
        "{err}"
    );
    assert!(resolve(&file, &[], &["dataset.image_size=32"]).is_ok());
}

#[test]
fn text_encoder_width_must_match_the_unet_context() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[], &["conditioning.width=64"]);
    assert!(
        err.contains("the text encoder's width 64 does not match unet.context_dim 768"),
        "{err}"
    );
}

#[test]
fn stage_graph_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = plan_error(&file, &["stages.ldm.needs=[\"vea\"]"]);
    assert!(
        err.contains(
            "needs `vea`, which is not a stage of this experiment (did you mean `vae`? stages: ldm, vae)"
        ),
        "{err}"
    );
    let cyc = format!("{BASE}\n[stages.s]\nkind = \"sample\"\nneeds = [\"ldm\"]\n");
    let file = write(dir.path(), "c.toml", &cyc);
    let err = plan_error(&file, &["stages.ldm.needs=[\"s\"]"]);
    assert!(
        err.contains("stages form a cycle: ldm -> s -> ldm"),
        "{err}"
    );
    let err = plan_error(&file, &["stages.s.needs=[\"vae\"]"]);
    assert!(
        err.contains(
            "a `sample` stage needs one `diffusion` stage, but `needs` lists `vae` (autoencoder)"
        ),
        "{err}"
    );
}

#[test]
fn missing_required_stage_keys_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "e.toml",
        "[experiment]\nname = \"t\"\n[stages.vae]\nkind = \"autoencoder\"\n",
    );
    let err = error(&file, &[], &[]);
    for key in ["steps", "batch_size", "lr"] {
        assert!(
            err.contains(&format!("key `stages.vae.{key}`: missing")),
            "{err}"
        );
    }
}

#[test]
fn extends_cycle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "extends = \"b.toml\"\n");
    let b = write(dir.path(), "b.toml", "extends = \"a.toml\"\n");
    let err = error(&b, &[], &[]);
    assert!(err.contains("`extends` forms a cycle"), "{err}");
}

#[test]
fn missing_prompt_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e.toml", BASE);
    let err = error(&file, &[], &["stages.ldm.prompts_file=\"nope.txt\""]);
    assert!(err.contains("nope.txt does not exist"), "{err}");
}

/// Fingerprints of the smoke experiment's stages with `sets` applied.
fn smoke_prints(sets: &[&str]) -> std::collections::BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
    let r = resolve(&path, &[], sets).unwrap_or_else(|e| panic!("{sets:?}: {e}"));
    let order: Vec<String> = ["vae", "ldm", "sample", "clf", "eval"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    ldm_run::plan::fingerprint::fingerprints(&r.experiment, &order)
}

#[test]
fn objective_keys_change_training_and_sampler_keys_only_sampling() {
    let base = smoke_prints(&[]);
    let off = smoke_prints(&[
        "schedule.zero_terminal_snr=false",
        "stages.ldm.noise_offset=0.0",
        "stages.ldm.input_perturbation=0.0",
    ]);
    assert_eq!(base, off, "an option set to off is the option left out");
    for training in [
        &["stages.ldm.noise_offset=0.1"][..],
        &["stages.ldm.input_perturbation=0.1"],
        &[
            "schedule.prediction=\"v\"",
            "schedule.zero_terminal_snr=true",
        ],
        &["schedule.prediction=\"x0\""],
    ] {
        let p = smoke_prints(training);
        assert_eq!(p["vae"], base["vae"], "{training:?}");
        assert_ne!(p["ldm"], base["ldm"], "{training:?} trains other weights");
        assert_ne!(p["eval"], base["eval"], "{training:?}: downstream");
    }
    let sampling = smoke_prints(&[
        "stages.ldm.sampler=\"dpmpp_2m\"",
        "stages.ldm.spacing=\"trailing\"",
        "stages.ldm.sigmas=\"karras\"",
        "stages.ldm.guidance_rescale=0.7",
    ]);
    assert_eq!(sampling["ldm"], base["ldm"], "preview grids only");
    let eval = smoke_prints(&[
        "stages.eval.sample_seed=3",
        "stages.eval.sampler_sweep=[{ sampler = \"unipc\", sampler_steps = 3 }]",
    ]);
    for trained in ["vae", "ldm", "clf", "sample"] {
        assert_eq!(eval[trained], base[trained], "{trained}");
    }
    assert_ne!(eval["eval"], base["eval"]);
}

#[test]
fn objective_and_sampler_keys_resolve_to_their_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
    let r = resolve(
        &path,
        &[("LDM_STAGES__LDM__NOISE_OFFSET", "0.1")],
        &[
            "schedule.prediction=\"v\"",
            "schedule.zero_terminal_snr=true",
            "stages.ldm.input_perturbation=0.05",
            "stages.sample.sampler=\"unipc\"",
            "stages.sample.spacing=\"trailing\"",
            "stages.sample.guidance_rescale=0.7",
            "stages.eval.sampler_sweep=[{ sampler = \"dpmpp_2m\", sampler_steps = 4 }, \
             { sampler = \"ddim\", sampler_steps = 8, spacing = \"leading\", eta = 0.5 }]",
            "stages.eval.sample_seed=9",
        ],
    )
    .unwrap();
    let e = &r.experiment;
    assert!(e.schedule.zero_terminal_snr);
    assert_eq!(e.schedule.noise_schedule().alphas_cumprod[999], 0.0);
    match &r.stage("ldm").unwrap().spec {
        StageSpec::Diffusion(d) => {
            assert_eq!(
                (d.noise.noise_offset, d.noise.input_perturbation),
                (0.1, 0.05)
            );
        }
        other => panic!("{other:?}"),
    }
    match &r.stage("sample").unwrap().spec {
        StageSpec::Sample(s) => {
            let json = serde_json::to_value(&s.sampling).unwrap();
            assert_eq!(json["sampler"], "unipc");
            assert_eq!(json["spacing"], "trailing");
            assert_eq!(json["sigmas"], "schedule");
            assert_eq!(json["guidance_rescale"], 0.7);
        }
        other => panic!("{other:?}"),
    }
    match &r.stage("eval").unwrap().spec {
        StageSpec::Eval(ev) => {
            let keys: Vec<String> = ev.measure.sampler_sweep.iter().map(|s| s.key()).collect();
            assert_eq!(keys, ["dpmpp_2m_4", "ddim_8_leading_eta0.5"]);
            assert_eq!(ev.measure.sample_seed, Some(9));
        }
        other => panic!("{other:?}"),
    }
    // Off switches stay out of the recorded configuration, as in runs made before they existed.
    let plain = resolve(&path, &[], &[]).unwrap().experiment_json();
    assert!(
        plain["schedule"].get("zero_terminal_snr").is_none(),
        "{plain}"
    );
    assert!(plain["stages"]["ldm"].get("noise_offset").is_none());
    assert!(plain["stages"]["ldm"].get("input_perturbation").is_none());
    assert!(plain["stages"]["eval"].get("sample_seed").is_none());
    let on = r.experiment_json();
    assert_eq!(on["schedule"]["zero_terminal_snr"], true);
    assert_eq!(on["stages"]["ldm"]["noise_offset"], 0.1);
}

#[test]
fn committed_schema_matches_the_types() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/experiment.schema.json"),
    )
    .expect("schemas/experiment.schema.json is committed");
    assert!(
        committed == config::json_schema(),
        "schemas/experiment.schema.json is out of date: run `cargo run -- schema > schemas/experiment.schema.json`"
    );
}

#[test]
fn shipped_experiments_resolve() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for name in [
        "smoke.toml",
        "mnist_kl_f4.toml",
        "mnist_kl_f4_seed.toml",
        "mnist_kl_f4_samplers.toml",
        "ablations/input_perturbation.toml",
        "ablations/offset_noise.toml",
        "ablations/v_zero_terminal_snr.toml",
    ] {
        resolve(&dir.join(name), &[], &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
