//! One file per stage kind; [`run_stage`] picks the one a stage's kind names.

pub mod autoencoder;
pub mod classifier;
pub mod context;
pub mod diffusion;
pub mod eval;
pub mod eval_report;
pub mod sample;
pub mod trained;

pub use context::{Outcome, Outputs, StageContext};

use crate::config::schema::StageKind;

/// Runs one stage to its end (or until asked to stop).
pub fn run_stage(ctx: &StageContext, out: &mut Outputs<'_, '_>) -> anyhow::Result<Outcome> {
    match ctx.stage.spec.kind() {
        StageKind::Autoencoder => autoencoder::run(ctx, out),
        StageKind::Diffusion => diffusion::run(ctx, out),
        StageKind::Sample => sample::run(ctx, out),
        StageKind::Classifier => classifier::run(ctx, out),
        StageKind::Eval => eval::run(ctx, out),
    }
}
