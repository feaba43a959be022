//! `kind = "sample"`: a prompt grid (and its prompts) from a trained diffusion stage, at the
//! sampler settings of this stage.

use std::collections::BTreeMap;

use anyhow::Context;

use super::context::{Outcome, Outputs, StageContext};
use super::trained::{self, Ldm};
use crate::config::StageSpec;
use crate::log::grid;

pub fn run(ctx: &StageContext, out: &mut Outputs<'_, '_>) -> anyhow::Result<Outcome> {
    let StageSpec::Sample { sampling } = &ctx.stage.spec else {
        anyhow::bail!("stage `{}` is not a sample stage", ctx.stage.name);
    };
    let source = ctx
        .stage
        .needs
        .first()
        .context("a sample stage needs a diffusion stage")?;
    let ldm = Ldm::load(ctx.run, ctx.resolved, source, ctx.device)?;
    let cols = ctx.grid_size();
    let prompts: Vec<Option<String>> = match &sampling.prompts_file {
        Some(path) => trained::read_prompts(path)?,
        None => trained::random_prompts(&ldm.vocab, cols * cols, &mut ctx.rng("prompts")),
    }
    .into_iter()
    .map(|p| ldm.conditioner.is_conditional().then_some(p))
    .collect();
    let images = ldm.generate(&prompts, sampling, &mut ctx.rng("noise"), ctx.device)?;
    let (n, c, h, w) = images.dims4()?;
    let picture = grid::grid(
        &images.flatten_all()?.to_vec1::<f32>()?,
        n,
        c,
        h,
        w,
        cols,
        2,
    );
    let png = ctx.save_sample("final.png", &picture)?;
    let text = trained::prompt_grid_text(&prompts, cols);
    ctx.save_sample_text("final.txt", &text)?;
    let name = &ctx.stage.name;
    out.events.image(&format!("{name}/samples"), &picture, 0)?;
    out.events
        .text(&format!("{name}/prompts"), &format!("```\n{text}```"), 0)?;
    eprintln!("{name}: wrote {}", png.display());
    let notes = BTreeMap::from([("grid".to_string(), png.display().to_string())]);
    Ok(Outcome {
        interrupted: false,
        metrics: BTreeMap::new(),
        notes,
    })
}
