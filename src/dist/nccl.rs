//! [`super::sum_gradients`] on GPUs, over NCCL (cudarc's bindings, through candle): the
//! gradients never leave the GPUs. NCCL's own all-reduce sums in an order of its choosing, so
//! the sum is [`super::exchange`]'s, in the one pairwise order, with NCCL's point-to-point
//! calls as its transport: each round is one NCCL group of sends and receives.
//!
//! The communicator is made at the first sum, collectively: rank 0 draws NCCL's unique id and
//! MPI broadcasts it. It runs on candle's stream of the rank's GPU, so it follows the
//! backward pass that made the gradients and precedes the optimizer step that reads the sum,
//! without a synchronisation of its own. Only the main thread sums, as only it calls MPI.

use std::cell::RefCell;

use anyhow::{anyhow, bail};
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::cuda::cudarc::nccl::safe::{Comm, Id, group_end, group_start};
use candle_core::cuda::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Storage, Tensor};

use super::exchange::{self, Exchange};

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

/// Sends the vector `t` to `peer`. NCCL reads `t`'s memory when the group ends, so `t` must
/// be the caller's own contiguous tensor, not a copy made here and freed before then.
fn send(comm: &Comm, t: &Tensor, peer: usize) -> anyhow::Result<()> {
    if !t.is_contiguous() {
        bail!(
            "NCCL sends contiguous vectors; this one has layout {:?}",
            t.layout()
        );
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("NCCL sends GPU tensors; this one is on {:?}", t.device());
    };
    let at = layout.start_offset();
    let view = s.as_cuda_slice::<f32>()?.slice(at..at + t.elem_count());
    comm.send(&view, peer as i32)
        .map_err(nccl_error("sending gradients"))
}

/// [`Exchange`] over this rank's NCCL communicator on `device`.
struct Nccl<'a> {
    device: &'a CudaDevice,
}

impl Exchange for Nccl<'_> {
    fn exchange(
        &self,
        sends: &[Option<Tensor>],
        lens: &[usize],
    ) -> anyhow::Result<Vec<Option<Tensor>>> {
        let mut buffers = lens
            .iter()
            .map(|&len| (len > 0).then(|| alloc(self.device, len)).transpose())
            .collect::<anyhow::Result<Vec<_>>>()?;
        with_comm(self.device, |comm| {
            grouped(|| {
                for (peer, (t, buffer)) in sends.iter().zip(buffers.iter_mut()).enumerate() {
                    if let Some(t) = t {
                        send(comm, t, peer)?;
                    }
                    if let Some(buffer) = buffer {
                        comm.recv(buffer, peer as i32)
                            .map_err(nccl_error("receiving gradients"))?;
                    }
                }
                Ok(())
            })
        })?;
        Ok(buffers
            .into_iter()
            .map(|b| b.map(|b| tensor(b, self.device)))
            .collect())
    }
}

pub fn sum_gradients(
    flat: &Tensor,
    sizes: &[usize],
    present: &[bool],
) -> anyhow::Result<(Tensor, Vec<bool>)> {
    let w = super::world();
    let Device::Cuda(device) = flat.device() else {
        bail!("the NCCL gradient sum needs a GPU tensor");
    };
    let all_present = super::backend::all_flags(present);
    let segments = sizes.len();
    let present = (0..segments)
        .map(|s| (0..w.size).any(|r| all_present[r * segments + s]))
        .collect();
    let summed = exchange::sum(&Nccl { device }, w.rank, w.size, flat, sizes, &all_present)?;
    Ok((summed, present))
}
