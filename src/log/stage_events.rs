//! A stage's view of the run's TensorBoard events. Stages count steps from their own start;
//! TensorBoard sees run steps, the stage's step plus the steps of the training stages before
//! it. So stages of one run never share a step: the restart marker a resumed stage writes
//! (which makes TensorBoard drop every point of the run at or after it) removes only that
//! stage's own stale points, and both of TensorBoard's loaders show each step once.

use super::{EventWriter, GridImage, Result};

pub struct StageEvents<'a> {
    writer: &'a mut EventWriter,
    offset: u64,
}

impl<'a> StageEvents<'a> {
    /// Events of a stage that starts at run step `offset`.
    pub fn new(writer: &'a mut EventWriter, offset: u64) -> Self {
        Self { writer, offset }
    }

    /// The run step of the stage's `step`.
    pub fn run_step(&self, step: u64) -> u64 {
        self.offset + step
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        self.writer.scalar(tag, value, self.offset + step)
    }

    pub fn scalars(&mut self, values: &[(&str, f64)], step: u64) -> Result<()> {
        self.writer.scalars(values, self.offset + step)
    }

    pub fn image(&mut self, tag: &str, img: &GridImage, step: u64) -> Result<()> {
        self.writer.image(tag, img, self.offset + step)
    }

    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) -> Result<()> {
        self.writer.text(tag, markdown, self.offset + step)
    }

    /// Marks a resume of this stage after `step` steps: points the interrupted process logged
    /// for later steps are dropped by TensorBoard.
    pub fn resume_after(&mut self, step: u64) -> Result<()> {
        self.writer.resume_at(self.offset + step + 1)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush()
    }
}
