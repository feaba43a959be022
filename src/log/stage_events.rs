//! A stage's view of the run's TensorBoard events. Stages count steps from their own start;
//! TensorBoard sees run steps, the stage's step plus the steps of the training stages before
//! it. So stages of one run never share a step: the restart marker a resumed stage writes
//! (which makes TensorBoard drop every point of the run at or after it) removes only that
//! stage's own stale points, and both of TensorBoard's loaders show each step once.
//!
//! Only rank 0 of a job of several processes writes events ([`crate::dist`]); the other ranks'
//! stage events have no writer and log nothing.

use super::{EventWriter, GridImage, Result};

pub struct StageEvents<'a> {
    writer: Option<&'a mut EventWriter>,
    offset: u64,
}

impl<'a> StageEvents<'a> {
    /// Events of a stage that starts at run step `offset` (`None`: nothing is logged).
    pub fn new(writer: Option<&'a mut EventWriter>, offset: u64) -> Self {
        Self { writer, offset }
    }

    /// `f` on the writer, if there is one.
    fn with(&mut self, f: impl FnOnce(&mut EventWriter, u64) -> Result<()>) -> Result<()> {
        match self.writer.as_deref_mut() {
            Some(w) => f(w, self.offset),
            None => Ok(()),
        }
    }

    /// The run step of the stage's `step`.
    pub fn run_step(&self, step: u64) -> u64 {
        self.offset + step
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        self.with(|w, offset| w.scalar(tag, value, offset + step))
    }

    pub fn scalars(&mut self, values: &[(&str, f64)], step: u64) -> Result<()> {
        self.with(|w, offset| w.scalars(values, offset + step))
    }

    pub fn image(&mut self, tag: &str, img: &GridImage, step: u64) -> Result<()> {
        self.with(|w, offset| w.image(tag, img, offset + step))
    }

    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) -> Result<()> {
        self.with(|w, offset| w.text(tag, markdown, offset + step))
    }

    /// Marks a resume of this stage after `step` steps: points the interrupted process logged
    /// for later steps are dropped by TensorBoard.
    pub fn resume_after(&mut self, step: u64) -> Result<()> {
        self.with(|w, offset| w.resume_at(offset + step + 1))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.with(|w, _| w.flush())
    }
}
