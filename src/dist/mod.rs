//! One run over many processes: data parallelism as PyTorch's DistributedDataParallel does it,
//! on MPI (Gropp, Lusk and Skjellum, "Using MPI", 3rd ed., 2014).
//!
//! `mpirun -np 4 ldm-run exp.toml`, or `srun -n 8 ldm-run exp.toml` in a Slurm allocation,
//! starts one `ldm-run` per rank. Every rank computes the same plan, draws the same batch
//! indices and noise from the seed, and works on its own shards of each batch (global shard
//! `rank * shards_per_rank + i`, see [`crate::parallel`]); the shards' gradients are summed in
//! one fixed order on every rank ([`order`]) before the one optimizer update that every rank
//! applies. Rank 0 alone writes the run folder and prints progress ([`writes`]); the other
//! ranks print only their errors, prefixed with their rank ([`quiet`]).
//!
//! This module is the one place that knows the rank. Built without the `mpi` feature, or
//! started without a launcher, the process is a world of one and every collective here returns
//! its input.

// The NCCL path's transport-neutral half; built without it, only for its tests.
#[cfg(any(feature = "nccl", test))]
mod exchange;
mod launch;
#[cfg(feature = "nccl")]
mod nccl;
pub mod order;
#[cfg(feature = "mpi")]
mod quiet;

#[cfg_attr(feature = "mpi", path = "mpi.rs")]
#[cfg_attr(not(feature = "mpi"), path = "single.rs")]
mod backend;

use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::bail;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;

/// Where this process stands in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// Rank among the processes of this machine.
    pub local_rank: usize,
    /// Processes of this job on this machine.
    pub local_size: usize,
}

impl World {
    /// A process on its own.
    pub const ONE: World = World {
        rank: 0,
        size: 1,
        local_rank: 0,
        local_size: 1,
    };
}

static WORLD: OnceLock<World> = OnceLock::new();

/// This process's place in the job ([`World::ONE`] until [`Session::join`] found a bigger one).
pub fn world() -> World {
    WORLD.get().copied().unwrap_or(World::ONE)
}

/// Whether this process writes the run's files, events and progress: rank 0.
pub fn writes() -> bool {
    world().rank == 0
}

/// How a run splits its batches: the manifest records it, and a resume must split the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Processes (MPI ranks) of the run.
    pub world_size: usize,
    /// Batch shards each rank works on (its threads on the CPU, one on a GPU).
    pub shards_per_rank: usize,
}

impl Layout {
    /// The shards of every batch: the number that decides the run's numbers.
    pub fn total(&self) -> usize {
        self.world_size * self.shards_per_rank
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, many: &'static str| if n == 1 { "" } else { many };
        write!(
            f,
            "{} shard{} ({} process{} x {})",
            self.total(),
            plural(self.total(), "s"),
            self.world_size,
            plural(self.world_size, "es"),
            self.shards_per_rank
        )
    }
}

/// The device this rank works on when the experiment names `spec`: with several ranks on a
/// machine, rank r of the machine takes the r-th GPU from `spec`'s index on (`cuda` is
/// `cuda:<local rank>`), as DDP's `LOCAL_RANK` convention has it, unless the launcher already
/// bound one GPU to each rank (`visible`, the value of CUDA_VISIBLE_DEVICES, names exactly
/// one), in which case every rank's only GPU is its `cuda:0`.
pub fn rank_device(spec: DeviceSpec, w: World, visible: Option<&str>) -> DeviceSpec {
    match spec {
        DeviceSpec::Cpu => DeviceSpec::Cpu,
        DeviceSpec::Cuda(_)
            if visible.is_some_and(|v| v.split(',').count() == 1) && w.local_size > 1 =>
        {
            DeviceSpec::Cuda(0)
        }
        DeviceSpec::Cuda(i) => DeviceSpec::Cuda(i + w.local_rank),
    }
}

/// The job this process belongs to, joined for a command that runs experiments; ending it
/// ends MPI.
pub struct Session {
    _backend: Option<backend::Universe>,
}

impl Session {
    /// Joins the job when a launcher (mpirun, srun) started this process; else a world of one.
    /// Refuses a launcher that started several processes that cannot form one world (a build
    /// without the `mpi` feature, or a launcher that does not speak to this MPI), which would
    /// otherwise run the whole experiment once per process.
    pub fn join() -> anyhow::Result<Self> {
        let launched = launch::detect();
        let mut universe = None;
        if launched.is_some()
            && let Some((u, w)) = backend::init()?
        {
            universe = Some(u);
            let _ = WORLD.set(w);
        }
        if let Some(l) = launched
            && l.processes > 1
            && world().size == 1
        {
            bail!("{}", launch::mismatch(&l, cfg!(feature = "mpi")));
        }
        Ok(Self { _backend: universe })
    }

    /// Passes a command's result on. With several ranks an error is printed (other ranks
    /// prefix their rank) and ends the whole job: the other ranks may be waiting for this one.
    pub fn end(self, result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
        #[cfg(feature = "nccl")]
        nccl::release();
        match result {
            Err(e) if world().size > 1 => backend::fail(&crate::commands::describe_error(&e)),
            other => other,
        }
    }
}

/// Whether any rank's `flag` is set (every rank must call it, at the same point).
pub fn any(flag: bool) -> bool {
    if world().size == 1 {
        return flag;
    }
    backend::any(flag)
}

/// Waits until every rank got here.
pub fn barrier() {
    if world().size > 1 {
        backend::barrier();
    }
}

/// The smallest `n` of all ranks.
pub fn min(n: usize) -> usize {
    if world().size == 1 {
        return n;
    }
    backend::min(n)
}

/// Rank 0's `bytes`, on every rank (what the others pass is ignored).
pub fn broadcast(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if world().size == 1 {
        return Ok(bytes);
    }
    backend::broadcast(bytes)
}

/// Every rank's `local` values, one vector per rank in rank order, on every rank.
pub fn gather_f32(local: &[f32]) -> anyhow::Result<Vec<Vec<f32>>> {
    if world().size == 1 {
        return Ok(vec![local.to_vec()]);
    }
    backend::gather_f32(local)
}

/// [`gather_f32`] of f64 values.
pub fn gather_f64(local: &[f64]) -> anyhow::Result<Vec<Vec<f64>>> {
    if world().size == 1 {
        return Ok(vec![local.to_vec()]);
    }
    backend::gather_f64(local)
}

/// How [`sum_gradients`] carries the gradients of work on `device`, in words.
pub fn gradient_transport(device: &candle_core::Device) -> &'static str {
    match (device.is_cuda(), cfg!(feature = "nccl")) {
        (true, true) => "on the GPUs over NCCL",
        (true, false) => "through the host over MPI (a build without the `nccl` feature)",
        (false, _) => "over MPI",
    }
}

/// The sum over ranks of every rank's gradient vector `flat` (f32, one segment per parameter
/// of `sizes`, a segment absent on this rank where `present` says so, its values zeros), in
/// the order of [`order::pairwise`] over the ranks: the same bits on every rank, whichever
/// transport carries them. A segment absent on every rank is absent in the result. On a GPU
/// with the `nccl` feature the values stay on the GPUs ([`nccl`]); else they travel through
/// the host over MPI.
pub fn sum_gradients(
    flat: &Tensor,
    sizes: &[usize],
    present: &[bool],
) -> anyhow::Result<(Tensor, Vec<bool>)> {
    if world().size == 1 {
        return Ok((flat.clone(), present.to_vec()));
    }
    #[cfg(feature = "nccl")]
    if flat.device().is_cuda() {
        return nccl::sum_gradients(flat, sizes, present);
    }
    let summed = backend::sum_segments(order::Segments {
        values: flat.to_vec1::<f32>()?,
        sizes: sizes.to_vec(),
        present: present.to_vec(),
    })?;
    let n = summed.values.len();
    Ok((
        Tensor::from_vec(summed.values, n, flat.device())?,
        summed.present,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_of_a_machine_takes_its_own_gpu() {
        let on_node = |local_rank, local_size| World {
            rank: 4 + local_rank,
            size: 8,
            local_rank,
            local_size,
        };
        let cuda = DeviceSpec::Cuda;
        assert_eq!(
            rank_device(DeviceSpec::Cpu, on_node(2, 4), None),
            DeviceSpec::Cpu
        );
        assert_eq!(rank_device(cuda(1), World::ONE, None), cuda(1));
        assert_eq!(rank_device(cuda(0), on_node(2, 4), None), cuda(2));
        assert_eq!(rank_device(cuda(1), on_node(3, 4), None), cuda(4));
        assert_eq!(
            rank_device(cuda(0), on_node(3, 4), Some("0,1,2,3")),
            cuda(3)
        );
        // The launcher bound one GPU to each rank: it is that rank's cuda:0.
        assert_eq!(rank_device(cuda(0), on_node(3, 4), Some("6")), cuda(0));
        assert_eq!(
            rank_device(cuda(1), on_node(1, 2), Some("GPU-5a1c")),
            cuda(0)
        );
        // One process per machine keeps the index it asked for.
        assert_eq!(rank_device(cuda(1), on_node(0, 1), Some("1")), cuda(1));
    }
}
