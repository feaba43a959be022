//! What a stage gets to work with: its settings, the run folder, the device, seeded streams, and
//! where to report (events, manifest).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use candle_core::{Device, Tensor};

use crate::config::Resolved;
use crate::data::{self, Dataset, Split};
use crate::dist;
use crate::log::{GridImage, StageEvents, grid};
use crate::plan::PlannedStage;
use crate::plan::manifest::Manifest;
use crate::plan::run_dir::RunDir;
use crate::rng::Rng;
use crate::train::trainer::{self, LoopEnd, LoopSettings, Trainee};
use crate::train::{HeldOutSettings, TrainSettings};

/// Read-only facts of the running stage.
pub struct StageContext<'a> {
    pub resolved: &'a Resolved,
    pub stage: &'a PlannedStage,
    pub run: &'a RunDir,
    pub device: &'a Device,
    pub seed: u64,
    /// The value of `LDM_DATA_DIR`, if set.
    pub data_dir: Option<String>,
    /// Raised by the signal handler: finish the step, checkpoint, stop.
    pub stop: &'a AtomicBool,
}

/// Where a stage reports: the run's events and manifest.
pub struct Outputs<'e, 'm> {
    pub events: StageEvents<'e>,
    pub manifest: &'m mut Manifest,
}

/// What a stage ended with.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub interrupted: bool,
    pub metrics: BTreeMap<String, f64>,
    pub notes: BTreeMap<String, String>,
}

impl StageContext<'_> {
    /// The stream `name` of this stage, derived from the experiment seed.
    pub fn rng(&self, name: &str) -> Rng {
        self.rng_of_seed(self.seed, name)
    }

    /// The stream `name` of this stage derived from `seed` instead of the experiment's (the
    /// same stream as `rng(name)` when `seed` is the experiment's).
    pub fn rng_of_seed(&self, seed: u64, name: &str) -> Rng {
        Rng::stream(seed, &format!("{}/{name}", self.stage.name))
    }

    pub fn grid_size(&self) -> usize {
        self.resolved.experiment.logging.grid_size
    }

    pub fn load_data(&self, split: Split) -> anyhow::Result<Dataset> {
        let cfg = &self.resolved.experiment.dataset;
        data::load(cfg, split, self.data_dir.as_deref()).with_context(|| {
            format!(
                "stage `{}` cannot load the {} split of {}",
                self.stage.name,
                split.as_str(),
                cfg.name.as_str()
            )
        })
    }

    /// Writes a PNG into the stage's `samples/` folder (rank 0 of a job alone writes).
    pub fn save_sample(&self, file: &str, image: &GridImage) -> anyhow::Result<PathBuf> {
        let path = self.run.samples(&self.stage.name).join(file);
        if dist::writes() {
            grid::save_png(image, &path)?;
        }
        Ok(path)
    }

    /// Writes a file into the stage's folder, e.g. `samples/final.txt` (rank 0 alone writes).
    pub fn save_file(&self, file: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.run.stage(&self.stage.name).join(file);
        if dist::writes() {
            crate::atomic_file::write(&path, bytes)?;
        }
        Ok(path)
    }

    /// Writes a text file into the stage's `samples/` folder.
    pub fn save_sample_text(&self, file: &str, text: &str) -> anyhow::Result<PathBuf> {
        self.save_file(&format!("samples/{file}"), text.as_bytes())
    }

    /// Runs the shared training loop for `trainee` (measuring `held_out` when the stage has
    /// it), recording progress in the manifest.
    pub fn train_loop(
        &self,
        trainee: &mut dyn Trainee,
        train: &TrainSettings,
        held_out: Option<&HeldOutSettings>,
        out: &mut Outputs,
    ) -> anyhow::Result<LoopEnd> {
        let logging = &self.resolved.experiment.logging;
        let settings = LoopSettings {
            stage: &self.stage.name,
            train,
            log_every: logging.log_every as u64,
            sample_every: logging.sample_every as u64,
            held_out,
            checkpoint_dir: self.run.checkpoints(&self.stage.name),
            device: self.device,
            stop: self.stop,
        };
        let Outputs { events, manifest } = out;
        let name = self.stage.name.clone();
        let mut record = |steps: u64| -> anyhow::Result<()> {
            if let Some(r) = manifest.stage_mut(&name) {
                r.steps_done = steps;
            }
            crate::runner::record(manifest, self.run)
        };
        trainer::run(trainee, &settings, events, &mut record)
    }
}

/// The images `idx` of `data` as a (B, C, H, W) tensor.
pub fn images_tensor(data: &Dataset, idx: &[usize], device: &Device) -> anyhow::Result<Tensor> {
    augmented_tensor(data, idx, None, device)
}

/// [`images_tensor`], mirroring left to right the images whose entry of `mirrored` is true.
pub fn augmented_tensor(
    data: &Dataset,
    idx: &[usize],
    mirrored: Option<&[bool]>,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let (mut pixels, _) = data.gather(idx);
    if let Some(m) = mirrored {
        data::flip_horizontal(&mut pixels, (data.channels, data.size, data.size), m);
    }
    Ok(Tensor::from_vec(
        pixels,
        (idx.len(), data.channels, data.size, data.size),
        device,
    )?)
}
