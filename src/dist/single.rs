//! The collectives of [`super`] in a build without the `mpi` feature: a process is always a
//! world of one, so [`init`] finds no job and the facade never calls the rest with several
//! ranks; they return their input.

use super::World;
use super::order::Segments;

/// Nothing to hold: there is no MPI to end.
pub struct Universe;

pub fn init() -> anyhow::Result<Option<(Universe, World)>> {
    Ok(None)
}

pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

pub fn barrier() {}

pub fn any(flag: bool) -> bool {
    flag
}

pub fn min(n: usize) -> usize {
    n
}

pub fn broadcast(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    Ok(bytes)
}

pub fn gather_f32(local: &[f32]) -> anyhow::Result<Vec<Vec<f32>>> {
    Ok(vec![local.to_vec()])
}

pub fn gather_f64(local: &[f64]) -> anyhow::Result<Vec<Vec<f64>>> {
    Ok(vec![local.to_vec()])
}

pub fn sum_segments(parts: Segments) -> anyhow::Result<Segments> {
    Ok(parts)
}
