//! `kind = "sample"`: a prompt grid (and its prompts) from a trained diffusion stage, at the
//! sampler settings of this stage, with the network evaluations each sample took (`nfe`).

use std::collections::BTreeMap;

use super::artifacts;
use super::context::{Outcome, Outputs, StageContext};
use crate::conditioning::{TokenizerKind, prompts};
use crate::config::stage::SampleStage;
use crate::data::Split;
use crate::log::grid;
use crate::plan::ModelRef;

pub fn run(
    ctx: &StageContext,
    spec: &SampleStage,
    model: &ModelRef,
    out: &mut Outputs<'_, '_>,
) -> anyhow::Result<Outcome> {
    let sampling = &spec.sampling;
    let (ldm, step) = artifacts::ldm(
        ctx.run,
        ctx.resolved,
        model,
        spec.input.checkpoint,
        ctx.device,
    )?;
    let cols = ctx.grid_size();
    let kind = ldm.tokenizer.kind();
    let listed = match &spec.grid.prompts_file {
        Some(path) => Some(prompts::read(path, kind)?),
        None => None,
    };
    let prompts: Vec<Option<String>> = if ldm.conditioner.is_conditional() {
        let captions = match (&listed, kind) {
            (None, TokenizerKind::Bpe | TokenizerKind::WordLevel) => {
                crate::data::captions(&ctx.resolved.experiment.dataset, Split::Train)?
            }
            _ => None,
        };
        let drawn = prompts::for_grid(
            listed.as_deref(),
            &ldm.tokenizer,
            captions.as_deref(),
            cols * cols,
            &mut ctx.rng("prompts"),
        )?;
        prompts::report_cuts(&ldm.tokenizer, &drawn, &ctx.stage.name);
        drawn.into_iter().map(Some).collect()
    } else {
        vec![None; listed.map_or(cols * cols, |l| l.len())]
    };
    let generated = ldm.generate(&prompts, sampling, &mut ctx.rng("noise"), ctx.device)?;
    let images = generated.images;
    let nfe = generated.nfe as f64;
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
    let text = prompts::grid_text(&prompts, cols, kind);
    ctx.save_sample_text("final.txt", &text)?;
    let name = &ctx.stage.name;
    out.events.image(&format!("{name}/samples"), &picture, 0)?;
    out.events.scalars(&[(&format!("{name}/nfe"), nfe)], 0)?;
    out.events
        .text(&format!("{name}/prompts"), &format!("```\n{text}```"), 0)?;
    eprintln!(
        "{name}: wrote {} ({nfe} network evaluations per sample)",
        png.display()
    );
    let notes = BTreeMap::from([
        ("grid".to_string(), png.display().to_string()),
        (
            "checkpoint".to_string(),
            artifacts::describe(spec.input.checkpoint, step),
        ),
    ]);
    Ok(Outcome {
        interrupted: false,
        metrics: BTreeMap::from([("nfe".to_string(), nfe)]),
        notes,
    })
}
