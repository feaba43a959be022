//! One file per stage kind; [`run_stage`] runs the task the plan gave a stage.

pub mod artifacts;
pub mod autoencoder;
pub mod classifier;
pub mod context;
pub mod diffusion;
pub mod eval;
pub mod eval_report;
pub mod pipeline;
pub mod reference;
pub mod sample;
pub mod training_judge;

pub use context::{Outcome, Outputs, StageContext};

use crate::plan::Task;

/// Runs one stage to its end (or until asked to stop).
pub fn run_stage(ctx: &StageContext, out: &mut Outputs<'_, '_>) -> anyhow::Result<Outcome> {
    match &ctx.stage.task {
        Task::Autoencoder(spec) => autoencoder::run(ctx, spec, out),
        Task::Diffusion {
            spec,
            autoencoder,
            judge,
        } => diffusion::run(ctx, spec, autoencoder, judge.as_deref(), out),
        Task::Sample { spec, model } => sample::run(ctx, spec, model, out),
        Task::Classifier(spec) => classifier::run(ctx, spec, out),
        Task::Eval {
            spec,
            model,
            classifier,
        } => eval::run(ctx, spec, model, classifier, out),
    }
}
