//! The collectives of [`super`] on MPI, through the `mpi` crate (rsmpi). Only the main thread
//! calls MPI (`MPI_THREAD_FUNNELED`); the shard threads never do.

use anyhow::{Context, bail};
use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub use mpi::environment::Universe;

use super::World;
use super::order::{self, Segments};

fn comm() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// MPI counts are C ints.
fn count(n: usize) -> anyhow::Result<i32> {
    i32::try_from(n).with_context(|| {
        format!("{n} values in one MPI message is more than MPI's 2^31 - 1 limit per message")
    })
}

/// Initialises MPI and finds this process's place; on several ranks the others go quiet.
pub fn init() -> anyhow::Result<Option<(Universe, World)>> {
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        bail!("MPI was initialised twice in one process");
    };
    let world = universe.world();
    let local = world.split_shared(world.rank());
    let w = World {
        rank: world.rank() as usize,
        size: world.size() as usize,
        local_rank: local.rank() as usize,
        local_size: local.size() as usize,
    };
    if w.size > 1 {
        super::quiet::install(w.rank);
    }
    Ok(Some((universe, w)))
}

/// Ends every rank of the job (MPI_Abort): the others may be waiting for this one.
pub fn abort(code: i32) -> ! {
    comm().abort(code)
}

/// Prints `message` as this rank's error and ends the job.
pub fn fail(message: &str) -> ! {
    super::quiet::error(message);
    abort(1)
}

pub fn barrier() {
    comm().barrier();
}

pub fn any(flag: bool) -> bool {
    let mut out = 0u8;
    comm().all_reduce_into(&u8::from(flag), &mut out, SystemOperation::max());
    out != 0
}

pub fn min(n: usize) -> usize {
    let mut out = 0u64;
    comm().all_reduce_into(&(n as u64), &mut out, SystemOperation::min());
    out as usize
}

pub fn broadcast(mut bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let c = comm();
    let root = c.process_at_rank(0);
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    bytes.resize(len as usize, 0);
    for piece in bytes.chunks_mut(1 << 30) {
        root.broadcast_into(piece);
    }
    Ok(bytes)
}

/// Every rank's `local`, one vector per rank in rank order.
fn gather<T: Equivalence + Copy + Default>(local: &[T]) -> anyhow::Result<Vec<Vec<T>>> {
    let c = comm();
    let mut counts = vec![0i32; c.size() as usize];
    c.all_gather_into(&count(local.len())?, &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0i32, |at, &n| {
            let d = *at;
            *at += n;
            Some(d)
        })
        .collect();
    let total: usize = counts.iter().map(|&n| n as usize).sum();
    count(total)?;
    let mut all = vec![T::default(); total];
    c.all_gather_varcount_into(
        local,
        &mut PartitionMut::new(&mut all[..], &counts[..], &displs[..]),
    );
    Ok(counts
        .iter()
        .zip(&displs)
        .map(|(&n, &d)| all[d as usize..(d + n) as usize].to_vec())
        .collect())
}

pub fn gather_f32(local: &[f32]) -> anyhow::Result<Vec<Vec<f32>>> {
    gather(local)
}

pub fn gather_f64(local: &[f64]) -> anyhow::Result<Vec<Vec<f64>>> {
    gather(local)
}

/// Every rank's `local` flags (all of the same length), one after another in rank order.
pub fn all_flags(local: &[bool]) -> Vec<bool> {
    let c = comm();
    let flags: Vec<u8> = local.iter().map(|&b| u8::from(b)).collect();
    let mut all = vec![0u8; c.size() as usize * flags.len()];
    c.all_gather_into(&flags[..], &mut all[..]);
    all.iter().map(|&f| f != 0).collect()
}

/// See [`super::sum_gradients`]: all-to-all of the chunks, each rank folds its chunk over the
/// ranks ([`order::fold_chunk`]), all-gather of the folded chunks.
pub fn sum_segments(parts: Segments) -> anyhow::Result<Segments> {
    let c = comm();
    let (p, rank) = (c.size() as usize, c.rank() as usize);
    let n = parts.values.len();
    let present = all_flags(&parts.present);

    let chunks: Vec<_> = (0..p).map(|r| order::chunk(n, p, r)).collect();
    let counts = chunks
        .iter()
        .map(|r| count(r.len()))
        .collect::<anyhow::Result<Vec<i32>>>()?;
    let displs = chunks
        .iter()
        .map(|r| count(r.start))
        .collect::<anyhow::Result<Vec<i32>>>()?;
    let mine = chunks[rank].clone();
    let mine_len = count(mine.len())?;
    let recv_counts = vec![mine_len; p];
    let recv_displs = (0..p)
        .map(|r| count(r * mine.len()))
        .collect::<anyhow::Result<Vec<i32>>>()?;
    let mut received = vec![0f32; p * mine.len()];
    c.all_to_all_varcount_into(
        &Partition::new(&parts.values[..], &counts[..], &displs[..]),
        &mut PartitionMut::new(&mut received[..], &recv_counts[..], &recv_displs[..]),
    );
    let folded = order::fold_chunk(&received, p, mine, &parts.sizes, &present);
    let mut values = vec![0f32; n];
    c.all_gather_varcount_into(
        &folded[..],
        &mut PartitionMut::new(&mut values[..], &counts[..], &displs[..]),
    );
    let segments = parts.sizes.len();
    let present = (0..segments)
        .map(|s| (0..p).any(|r| present[r * segments + s]))
        .collect();
    Ok(Segments {
        values,
        sizes: parts.sizes,
        present,
    })
}
