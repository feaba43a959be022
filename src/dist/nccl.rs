//! [`super::sum_gradients`] on GPUs, over NCCL (cudarc's bindings, through candle): the
//! gradients never leave the GPUs. NCCL's own all-reduce sums in an order of its choosing, so
//! the sum is written out as [`super::order`] describes, with NCCL's point-to-point calls:
//! every rank sends chunk r of its vector to rank r, folds the chunk it received from all
//! ranks in the one pairwise order ([`order::fold_chunk_tensors`], on the GPU), and sends the
//! folded chunk to every rank. The same bytes on the wire as a ring all-reduce, and the same
//! bits as the host path over MPI.
//!
//! The communicator is made at the first sum, collectively: rank 0 draws NCCL's unique id and
//! MPI broadcasts it. It runs on candle's stream of the rank's GPU, so it follows the
//! backward pass that made the gradients and precedes the optimizer step that reads the sum,
//! without a synchronisation of its own. Only the main thread sums, as only it calls MPI.

use std::cell::RefCell;
use std::ops::Range;

use anyhow::{Context, anyhow, bail};
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::cuda::cudarc::nccl::safe::{Comm, Id, group_end, group_start};
use candle_core::cuda::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Storage, Tensor};

use super::order;

thread_local! {
    /// This rank's communicator, with the ordinal of the GPU it was made on.
    static COMM: RefCell<Option<(usize, Comm)>> = const { RefCell::new(None) };
}

fn nccl_error(
    what: &str,
) -> impl FnOnce(candle_core::cuda::cudarc::nccl::result::NcclError) -> anyhow::Error {
    move |e| anyhow!("NCCL {what} failed: {e:?}")
}

/// The communicator of all ranks on `device`, made at the first call.
fn with_comm<R>(
    device: &CudaDevice,
    f: impl FnOnce(&Comm) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    COMM.with_borrow_mut(|slot| {
        let ordinal = device.cuda_stream().context().ordinal();
        if slot.as_ref().is_none_or(|(o, _)| *o != ordinal) {
            *slot = Some((ordinal, join(device)?));
        }
        let Some((_, comm)) = slot.as_ref() else {
            bail!("no NCCL communicator");
        };
        f(comm)
    })
}

/// Ends this rank's communicator, if it made one, while its GPU's context is surely alive
/// (before MPI and the process end, not in a thread-local destructor at exit).
pub fn release() {
    COMM.with_borrow_mut(|slot| drop(slot.take()));
}

/// Makes the communicator: rank 0's unique id, broadcast over MPI, joined by every rank.
fn join(device: &CudaDevice) -> anyhow::Result<Comm> {
    let w = super::world();
    let id = if w.rank == 0 {
        let id = Id::new().map_err(nccl_error("making the unique id"))?;
        id.internal().iter().map(|&c| c as u8).collect()
    } else {
        Vec::new()
    };
    let bytes = super::broadcast(id)?;
    let internal: [std::ffi::c_char; 128] = bytes
        .iter()
        .map(|&b| b as std::ffi::c_char)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|v: Vec<_>| anyhow!("NCCL's unique id has 128 bytes, rank 0 sent {}", v.len()))?;
    let stream = device.cuda_stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| anyhow!("binding the GPU's context for NCCL: {e:?}"))?;
    Comm::from_rank(stream, w.rank, w.size, Id::uninit(internal))
        .map_err(nccl_error("joining the communicator (ncclCommInitRank)"))
}

/// A new zeroed f32 buffer of `n` on `device`'s stream.
fn alloc(device: &CudaDevice, n: usize) -> anyhow::Result<CudaSlice<f32>> {
    device
        .cuda_stream()
        .alloc_zeros::<f32>(n)
        .map_err(|e| anyhow!("allocating {n} floats on the GPU for NCCL: {e:?}"))
}

/// `slice` as a vector tensor on `device`.
fn tensor(slice: CudaSlice<f32>, device: &CudaDevice) -> Tensor {
    let n = slice.len();
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
    Tensor::from_storage(storage, n, BackpropOp::none(), false)
}

/// Runs `calls` as one NCCL group (the sends and receives of a step proceed together).
fn grouped(calls: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    group_start().map_err(nccl_error("starting a group"))?;
    let result = calls();
    group_end().map_err(nccl_error("ending a group"))?;
    result
}

/// Sends `part` of the vector `t` to `peer`.
fn send(comm: &Comm, t: &Tensor, part: Range<usize>, peer: usize) -> anyhow::Result<()> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("NCCL sends GPU tensors; this one is on {:?}", t.device());
    };
    let at = layout.start_offset();
    let view = s
        .as_cuda_slice::<f32>()?
        .slice(at + part.start..at + part.end);
    comm.send(&view, peer as i32)
        .map_err(nccl_error("sending gradients"))
}

pub fn sum_gradients(
    flat: &Tensor,
    sizes: &[usize],
    present: &[bool],
) -> anyhow::Result<(Tensor, Vec<bool>)> {
    let w = super::world();
    let (p, rank) = (w.size, w.rank);
    let Device::Cuda(device) = flat.device() else {
        bail!("the NCCL gradient sum needs a GPU tensor");
    };
    let flat = flat.contiguous()?;
    let n = flat.elem_count();
    let all_present = super::backend::all_flags(present);
    let segments = sizes.len();
    let present = (0..segments)
        .map(|s| (0..p).any(|r| all_present[r * segments + s]))
        .collect();
    if n == 0 {
        return Ok((flat, present));
    }
    let chunks: Vec<Range<usize>> = (0..p).map(|r| order::chunk(n, p, r)).collect();
    let mine = chunks[rank].clone();

    // All-to-all: chunk r of every rank's vector to rank r.
    // A rank whose chunk is empty (a vector shorter than the world) receives nothing.
    let mut pieces = match mine.is_empty() {
        true => Vec::new(),
        false => (0..p)
            .map(|_| alloc(device, mine.len()))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    with_comm(device, |comm| {
        grouped(|| {
            for (r, part) in chunks.iter().enumerate() {
                if !part.is_empty() {
                    send(comm, &flat, part.clone(), r)?;
                }
                if !mine.is_empty() {
                    comm.recv(&mut pieces[r], r as i32)
                        .map_err(nccl_error("receiving gradients"))?;
                }
            }
            Ok(())
        })
    })?;
    let pieces: Vec<Tensor> = pieces.into_iter().map(|s| tensor(s, device)).collect();
    let folded = order::fold_chunk_tensors(&pieces, mine.clone(), sizes, &all_present)
        .context("folding the received gradients")?
        .contiguous()?;

    // All-gather: every rank's folded chunk to every rank.
    let mut out = alloc(device, n)?;
    with_comm(device, |comm| {
        grouped(|| {
            for (r, part) in chunks.iter().enumerate() {
                if !mine.is_empty() {
                    send(comm, &folded, 0..mine.len(), r)?;
                }
                if !part.is_empty() {
                    comm.recv(&mut out.slice_mut(part.clone()), r as i32)
                        .map_err(nccl_error("receiving summed gradients"))?;
                }
            }
            Ok(())
        })
    })?;
    Ok((tensor(out, device), present))
}
