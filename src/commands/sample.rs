//! `ldm-run sample <RUN_DIR>`: images from a finished diffusion stage for given prompts. The
//! flags are checked like the same keys in a file, and the prompts against the stage's
//! vocabulary, before any weights are loaded or anything is written.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::conditioning::{ConditioningKind, TokenizerKind, prompts};
use crate::config::error::closest;
use crate::config::{Resolved, StageKind};
use crate::diffusion::samplers::{SamplerKind, SamplerSettings, Sigmas, Spacing};
use crate::diffusion::schedule::ScheduleConfig;
use crate::log::grid;
use crate::plan::manifest::{Manifest, Status};
use crate::plan::run_dir::RunDir;
use crate::plan::{ModelRef, Task};
use crate::rng::Rng;
use crate::stages::artifacts;
use crate::train::choice::CheckpointChoice;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    pub run_dir: PathBuf,
    /// Prompts: one word each for class prompts, one line each for a caption tokenizer.
    pub prompts: Option<String>,
    pub prompts_file: Option<PathBuf>,
    /// Diffusion stage to sample from (default: the run's only diffusion stage).
    pub stage: Option<String>,
    pub sampler: Option<SamplerKind>,
    pub steps: Option<usize>,
    pub eta: Option<f64>,
    pub spacing: Option<Spacing>,
    pub sigmas: Option<Sigmas>,
    pub guidance: Option<f64>,
    pub guidance_rescale: Option<f64>,
    pub seed: u64,
    /// Checkpoint of the diffusion stage.
    pub checkpoint: CheckpointChoice,
    pub out: Option<PathBuf>,
}

/// The flag a sampler key is set with here.
fn flag(key: &str) -> &str {
    match key {
        "sampler" => "--sampler",
        "sampler_steps" => "--steps",
        "eta" => "--eta",
        "spacing" => "--spacing",
        "sigmas" => "--sigmas",
        "guidance" => "--guidance",
        "guidance_rescale" => "--guidance-rescale",
        other => other,
    }
}

/// The sampler settings: the stage's, with the flags given on top, checked against the run's
/// schedule.
fn settings(
    args: &SampleArgs,
    stage: &SamplerSettings,
    schedule: &ScheduleConfig,
) -> anyhow::Result<SamplerSettings> {
    let s = SamplerSettings {
        sampler: args.sampler.unwrap_or(stage.sampler),
        sampler_steps: args.steps.unwrap_or(stage.sampler_steps),
        eta: args.eta.unwrap_or(stage.eta),
        spacing: args.spacing.unwrap_or(stage.spacing),
        sigmas: args.sigmas.unwrap_or(stage.sigmas),
        guidance: args.guidance.unwrap_or(stage.guidance),
        guidance_rescale: args.guidance_rescale.unwrap_or(stage.guidance_rescale),
    };
    let problems: Vec<String> = s
        .check(schedule)
        .into_vec()
        .into_iter()
        .map(|i| format!("  - {}: {}", flag(&i.key), i.message))
        .collect();
    if !problems.is_empty() {
        bail!(
            "invalid sampler settings:\n{}\nnothing was written",
            problems.join("\n")
        );
    }
    Ok(s)
}

/// The prompts to sample, split as the run's tokenizer reads them.
fn prompt_list(args: &SampleArgs, kind: TokenizerKind) -> anyhow::Result<Vec<String>> {
    match (&args.prompts, &args.prompts_file) {
        (Some(p), _) => {
            let listed = prompts::split(p, kind);
            if listed.is_empty() {
                bail!(
                    "--prompts holds no prompts; give {}",
                    prompts::format_hint(kind)
                );
            }
            Ok(listed)
        }
        (None, Some(f)) => prompts::read(f, kind),
        (None, None) => {
            bail!(
                "give prompts with --prompts or --prompts-file FILE: {}",
                prompts::format_hint(kind)
            )
        }
    }
}

/// Where the grid goes: `--out` (a .png in an existing folder) or the stage's samples folder.
fn out_path(args: &SampleArgs, run: &RunDir, stage: &str) -> anyhow::Result<PathBuf> {
    let Some(out) = &args.out else {
        return Ok(run.samples(stage).join(format!(
            "sample-{}.png",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        )));
    };
    if out.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!(
            "--out {}: the grid is a PNG; give a file name ending in .png",
            out.display()
        );
    }
    if out.is_dir() {
        bail!(
            "--out {} is a folder; give a file name ending in .png",
            out.display()
        );
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent
        && !dir.is_dir()
    {
        bail!(
            "--out {}: the folder {} does not exist (sample creates no folders)",
            out.display(),
            dir.display()
        );
    }
    Ok(out.clone())
}

/// Writes the grid and its prompts; returns the PNG path.
pub fn run(args: &SampleArgs) -> anyhow::Result<PathBuf> {
    let (run, manifest, resolved) = RunDir::open_existing(&args.run_dir)?;
    let (model, stage_settings) = pick_stage(&resolved, &manifest, args.stage.as_deref(), &run)?;
    let spec = settings(args, &stage_settings, &resolved.experiment.schedule)?;
    let tokenizer = artifacts::tokenizer(&run, &model.diffusion)?;
    let words = prompt_list(args, tokenizer.kind())?;
    let conditional = resolved.experiment.conditioning.kind != ConditioningKind::None;
    if matches!(
        resolved.experiment.conditioning.kind,
        ConditioningKind::Text | ConditioningKind::Class
    ) {
        for w in &words {
            tokenizer.encode(w)?;
        }
        prompts::report_cuts(&tokenizer, &words, "sample");
    }
    let out = out_path(args, &run, &model.diffusion)?;
    let device = resolved.experiment.experiment.device.open()?;
    let (ldm, _) = artifacts::ldm(&run, &resolved, &model, args.checkpoint, &device)?;
    let prompts: Vec<Option<String>> = words
        .into_iter()
        .map(|w| conditional.then_some(w))
        .collect();
    let generated = ldm.generate(
        &prompts,
        &spec,
        &mut Rng::stream(args.seed, "sample-command"),
        &device,
    )?;
    eprintln!(
        "{}: {} network evaluations per sample",
        spec.sampler.as_str(),
        generated.nfe
    );
    let images = generated.images;
    let (n, c, h, w) = images.dims4()?;
    let cols = resolved.experiment.logging.grid_size.min(n);
    let picture = grid::grid(
        &images.flatten_all()?.to_vec1::<f32>()?,
        n,
        c,
        h,
        w,
        cols,
        2,
    );
    grid::save_png(&picture, &out)?;
    crate::atomic_file::write(
        &out.with_extension("txt"),
        prompts::grid_text(&prompts, cols, tokenizer.kind()).as_bytes(),
    )?;
    Ok(out)
}

/// The diffusion stage to sample (with its autoencoder) and its sampler settings.
fn pick_stage(
    resolved: &Resolved,
    manifest: &Manifest,
    wanted: Option<&str>,
    run: &RunDir,
) -> anyhow::Result<(ModelRef, SamplerSettings)> {
    let stages = &resolved.experiment.stages;
    let diffusion: Vec<&str> = stages
        .iter()
        .filter(|(_, s)| s.spec.kind() == StageKind::Diffusion)
        .map(|(n, _)| n.as_str())
        .collect();
    let name = match wanted {
        Some(w) if diffusion.contains(&w) => w.to_string(),
        Some(w) => {
            let hint = closest(w, &diffusion)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            bail!(
                "--stage {w}: not a diffusion stage of this run ({hint}diffusion stages: {})",
                diffusion.join(", ")
            )
        }
        None => match diffusion.as_slice() {
            [one] => one.to_string(),
            [] => bail!("this run has no diffusion stage to sample from"),
            many => bail!(
                "this run has several diffusion stages ({}); pick one with --stage",
                many.join(", ")
            ),
        },
    };
    match manifest.stages.get(&name).map(|r| r.status) {
        Some(Status::Finished) => {}
        other => bail!(
            "stage `{name}` of {} has not finished (it is {}); finish it with `ldm-run --resume {}`",
            run.root.display(),
            other.map_or("missing", |s| s.as_str()),
            run.root.display(),
        ),
    }
    match crate::plan::task::of(&name, stages) {
        Some(Task::Diffusion {
            spec, autoencoder, ..
        }) => Ok((
            ModelRef {
                diffusion: name,
                autoencoder,
            },
            spec.sampling,
        )),
        _ => bail!(
            "stage `{name}` of {} names no autoencoder stage",
            Path::new(&run.root).display()
        ),
    }
}
