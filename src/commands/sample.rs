//! `ldm-run sample <RUN_DIR>`: images from a finished diffusion stage for given prompts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::schema::{SamplerKind, StageKind};
use crate::config::{self, SamplerSpec, StageSpec};
use crate::log::grid;
use crate::plan::manifest::{Manifest, Status};
use crate::plan::run_dir::{RunDir, write_atomic};
use crate::rng::Rng;
use crate::stages::trained::{self, Ldm};

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    pub run_dir: PathBuf,
    /// Prompts separated by whitespace (one word each).
    pub prompts: Option<String>,
    pub prompts_file: Option<PathBuf>,
    /// Diffusion stage to sample from (default: the run's only diffusion stage).
    pub stage: Option<String>,
    pub sampler: Option<SamplerKind>,
    pub steps: Option<usize>,
    pub eta: Option<f64>,
    pub guidance: Option<f64>,
    pub seed: u64,
    pub out: Option<PathBuf>,
}

/// Writes the grid and its prompts; returns the PNG path.
pub fn run(args: &SampleArgs) -> anyhow::Result<PathBuf> {
    let run = RunDir::open(&args.run_dir);
    let manifest = Manifest::load(&run.root)
        .with_context(|| format!("{} is not an ldm-run run folder", run.root.display()))?;
    let resolved =
        config::resolve_with_env(&run.config(), std::iter::empty(), &[]).with_context(|| {
            format!(
                "cannot read the run's configuration {}",
                run.config().display()
            )
        })?;
    let stage = pick_stage(&resolved, &manifest, args.stage.as_deref())?;
    let StageSpec::Diffusion { sampling, .. } =
        &resolved.stage(&stage).context("stage vanished")?.spec
    else {
        bail!("stage `{stage}` is not a diffusion stage");
    };
    let spec = SamplerSpec {
        sampler: args.sampler.unwrap_or(sampling.sampler),
        steps: args.steps.unwrap_or(sampling.steps),
        eta: args.eta.unwrap_or(sampling.eta),
        guidance: args.guidance.unwrap_or(sampling.guidance),
        prompts_file: None,
    };
    let device = crate::device::parse(&resolved.experiment.experiment.device)
        .map_err(anyhow::Error::msg)?
        .open()?;
    let ldm = Ldm::load(&run, &resolved, &stage, &device)?;
    let words: Vec<String> = match (&args.prompts, &args.prompts_file) {
        (Some(p), _) => p.split_whitespace().map(str::to_string).collect(),
        (None, Some(f)) => trained::read_prompts(f)?,
        (None, None) => {
            bail!("give prompts with --prompts \"one nine 2 3\" or --prompts-file FILE")
        }
    };
    if words.is_empty() {
        bail!("--prompts holds no prompts");
    }
    for w in &words {
        ldm.vocab.encode(w)?;
    }
    let prompts: Vec<Option<String>> = words
        .into_iter()
        .map(|w| ldm.conditioner.is_conditional().then_some(w))
        .collect();
    let images = ldm.generate(
        &prompts,
        &spec,
        &mut Rng::stream(args.seed, "sample-command"),
        &device,
    )?;
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
    let out = match &args.out {
        Some(p) => p.clone(),
        None => run.samples(&stage).join(format!(
            "sample-{}.png",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        )),
    };
    grid::save_png(&picture, &out)?;
    write_atomic(
        &out.with_extension("txt"),
        trained::prompt_grid_text(&prompts, cols).as_bytes(),
    )?;
    Ok(out)
}

fn pick_stage(
    resolved: &config::Resolved,
    manifest: &Manifest,
    wanted: Option<&str>,
) -> anyhow::Result<String> {
    let diffusion: Vec<&str> = resolved
        .stages
        .iter()
        .filter(|s| s.spec.kind() == StageKind::Diffusion)
        .map(|s| s.name.as_str())
        .collect();
    let name = match wanted {
        Some(w) if diffusion.contains(&w) => w.to_string(),
        Some(w) => bail!(
            "`{w}` is not a diffusion stage of this run (diffusion stages: {})",
            diffusion.join(", ")
        ),
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
        Some(Status::Finished) => Ok(name),
        other => bail!(
            "stage `{name}` of {} has not finished (it is {}); finish it with `ldm-run --resume {}`",
            Path::new(&resolved.path)
                .parent()
                .map_or_else(String::new, |p| p.display().to_string()),
            other.map_or("missing", |s| s.as_str()),
            Path::new(&resolved.path)
                .parent()
                .map_or_else(String::new, |p| p.display().to_string()),
        ),
    }
}
