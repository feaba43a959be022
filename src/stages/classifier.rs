//! `kind = "classifier"`: trains the CNN of [`crate::models::classifier`] on the training split
//! with cross-entropy, logs the loss and the batch accuracy, tracks the accuracy on a fixed
//! slice of the test split while training, and reports the accuracy on the whole test split at
//! the end. An EMA of the weights (`ema_decay`, as the diffusion stage keeps) smooths out the
//! last steps' noise; it is what is measured, and what the eval stage judges samples with.

use std::collections::BTreeMap;

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::context::{Outcome, Outputs, StageContext, images_tensor};
use crate::config::stage::ClassifierStage;
use crate::data::{BatchOrder, Dataset, Split};
use crate::log::StageEvents;
use crate::metrics::accuracy::Accuracy;
use crate::models::classifier::{self, Classifier};
use crate::nn::params::ParamStore;
use crate::parallel;
use crate::train::checkpoint::Checkpoint;
use crate::train::optimized::Optimized;
use crate::train::trainer::Trainee;

/// Test images whose accuracy is logged at every `logging.sample_every` steps.
const HELD_OUT: usize = 1000;
/// Images per forward pass when judging a whole split.
const JUDGE_BATCH: usize = 250;

/// Resumable state: the classifier draws nothing at random but its batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    order: BatchOrder,
}

struct ClassifierTrainee<'a> {
    ctx: &'a StageContext<'a>,
    model: Classifier,
    params: Optimized,
    data: Dataset,
    test: Dataset,
    batch_size: usize,
    state: State,
}

/// Labels and penultimate features of a set of images.
#[derive(Debug, Clone)]
pub struct Judged {
    pub predictions: Vec<u32>,
    /// [`classifier::FEATURES`] values per image, images one after another.
    pub features: Vec<f32>,
}

/// Runs `model` over the images `idx` of `data`, in batches.
pub fn judge(
    model: &Classifier,
    data: &Dataset,
    idx: &[usize],
    device: &Device,
) -> anyhow::Result<Judged> {
    let mut out = Judged {
        predictions: Vec::with_capacity(idx.len()),
        features: Vec::with_capacity(idx.len() * classifier::FEATURES),
    };
    for chunk in idx.chunks(JUDGE_BATCH) {
        let batch = judge_tensor(model, &images_tensor(data, chunk, device)?)?;
        out.predictions.extend(batch.predictions);
        out.features.extend(batch.features);
    }
    Ok(out)
}

/// Runs `model` over one (B, C, H, W) batch, split over the shards of every rank.
pub fn judge_tensor(model: &Classifier, x: &Tensor) -> anyhow::Result<Judged> {
    let both = parallel::batched(x.dim(0)?, x.device(), |r| {
        let out = model.forward(&x.narrow(0, r.start, r.len())?)?;
        Tensor::cat(&[&out.features, &out.logits], 1)
    })?;
    let classes = both.dim(1)? - classifier::FEATURES;
    Ok(Judged {
        predictions: classifier::predictions(&both.narrow(1, classifier::FEATURES, classes)?)?,
        features: both
            .narrow(1, 0, classifier::FEATURES)?
            .flatten_all()?
            .to_vec1()?,
    })
}

/// Accuracy of `model` on the first `count` images of `data` (all when `count` is 0).
pub fn accuracy_on(
    model: &Classifier,
    data: &Dataset,
    count: usize,
    device: &Device,
) -> anyhow::Result<Accuracy> {
    let n = if count == 0 {
        data.len()
    } else {
        count.min(data.len())
    };
    let idx: Vec<usize> = (0..n).collect();
    let judged = judge(model, data, &idx, device)?;
    Ok(Accuracy::of(
        &judged.predictions,
        &data.labels[..n],
        &data.class_names,
    ))
}

/// Trains the classifier stage; the outcome holds the accuracy on the whole test split.
pub fn run(
    ctx: &StageContext,
    spec: &ClassifierStage,
    out: &mut Outputs,
) -> anyhow::Result<Outcome> {
    let ClassifierStage { train, ema } = spec;
    let data = ctx.load_data(Split::Train)?;
    let test = ctx.load_data(Split::Test)?;
    let store = ParamStore::seeded(ctx.seed, ctx.device);
    let model = Classifier::new(data.channels, data.size, data.num_classes(), store.vb())
        .with_context(|| format!("stage `{}`", ctx.stage.name))?;
    let mut trainee = ClassifierTrainee {
        ctx,
        model,
        params: Optimized::new(store, train, ema.ema_decay)?,
        state: State {
            order: BatchOrder::new(ctx.seed, data.len()),
        },
        data,
        test,
        batch_size: train.batch_size,
    };
    let end = ctx.train_loop(&mut trainee, train, None, out)?;
    if !end.finished() {
        return Ok(Outcome {
            interrupted: true,
            ..Outcome::default()
        });
    }
    let acc = accuracy_on(&trainee.judging_model()?, &trainee.test, 0, ctx.device)?;
    let name = &ctx.stage.name;
    out.events.scalar(
        &format!("{name}/test/accuracy"),
        acc.overall,
        train.steps as u64,
    )?;
    eprintln!(
        "{name}: test accuracy {:.2}% ({} of {})",
        100.0 * acc.overall,
        acc.correct,
        acc.count
    );
    Ok(Outcome {
        interrupted: false,
        metrics: BTreeMap::from([("test/accuracy".to_string(), acc.overall)]),
        notes: BTreeMap::new(),
    })
}

impl ClassifierTrainee<'_> {
    /// The network as it is measured and used: EMA weights when kept.
    fn judging_model(&self) -> anyhow::Result<Classifier> {
        if self.params.ema.is_none() {
            return Ok(self.model.clone());
        }
        let store = ParamStore::from_tensors(self.params.eval_weights(), false, self.ctx.device);
        Ok(Classifier::new(
            self.data.channels,
            self.data.size,
            self.data.num_classes(),
            store.vb(),
        )?)
    }
}

impl Trainee for ClassifierTrainee<'_> {
    fn step(&mut self, _step: u64, lr: f64) -> anyhow::Result<Vec<(String, f64)>> {
        let idx = self.state.order.next(self.batch_size);
        let (pixels, labels) = self.data.gather(&idx);
        let x = Tensor::from_vec(
            pixels,
            (
                idx.len(),
                self.data.channels,
                self.data.size,
                self.data.size,
            ),
            self.ctx.device,
        )?;
        let b = idx.len();
        let y = Tensor::from_vec(labels, b, self.ctx.device)?;
        let shards = parallel::shards(b, self.ctx.device);
        let (grads, terms) = parallel::grads(&self.params.store.vars(), &shards, |_, r| {
            let logits = self.model.forward(&x.narrow(0, r.start, r.len())?)?.logits;
            let y = y.narrow(0, r.start, r.len())?;
            let loss = (classifier::cross_entropy(&logits, &y)? * (r.len() as f64 / b as f64))?;
            let correct = logits
                .argmax(1)?
                .eq(&y)?
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?;
            Ok::<_, candle_core::Error>(vec![loss, (correct / b as f64)?])
        })?;
        let norm = self.params.step(&grads, lr)?;
        Ok(vec![
            ("loss/ce".to_string(), terms[0]),
            ("accuracy".to_string(), terms[1]),
            ("grad_norm".to_string(), norm),
        ])
    }

    /// The accuracy on the first [`HELD_OUT`] test images (the classifier has nothing to draw).
    fn samples(&mut self, step: u64, events: &mut StageEvents) -> anyhow::Result<()> {
        let acc = accuracy_on(
            &self.judging_model()?,
            &self.test,
            HELD_OUT,
            self.ctx.device,
        )?;
        events.scalar(
            &format!("{}/held_out/accuracy", self.ctx.stage.name),
            acc.overall,
            step,
        )?;
        Ok(())
    }

    fn checkpoint(&self, step: u64) -> anyhow::Result<Checkpoint> {
        let mut ckpt = Checkpoint::new(step, &self.state);
        ckpt.state["class_names"] = serde_json::json!(self.data.class_names);
        self.params.save("model", &mut ckpt);
        Ok(ckpt)
    }

    fn restore(&mut self, ckpt: &Checkpoint) -> anyhow::Result<()> {
        self.params.restore("model", ckpt)?;
        self.state = ckpt.stage_state()?;
        Ok(())
    }
}
