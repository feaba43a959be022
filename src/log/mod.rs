//! What a run reports: TensorBoard events, PNG grids, progress.
