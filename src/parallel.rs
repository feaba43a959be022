//! Data parallelism over the CPU cores, and over the ranks of an MPI job: one shard of every
//! batch per core of every rank.
//!
//! The networks of this tool are small (8x8 latents, a few million weights), so splitting each
//! operation over the cores, as candle does, leaves them waiting on each other: every op ends
//! in a barrier, and candle's autograd bookkeeping between the ops runs on one core. The binary
//! therefore runs candle single-threaded ([`single_threaded_candle`]) and splits batches
//! instead: each shard runs its own forward (and backward) on its own core, and the shards'
//! gradients are summed.
//!
//! In a job of several ranks ([`crate::dist`]) a batch is split into ranks x shards-per-rank
//! shards; global shard `i` belongs to rank `i / shards_per_rank`. Every rank computes its own
//! shards; [`batched`] gathers the outputs on every rank, [`grads`] sums the gradients.
//!
//! Per-sample outputs do not depend on the split. A training step sums its gradient over the
//! shards in one fixed pairwise order ([`crate::dist::order`]), so its numbers depend on the
//! total shard count, never on scheduling or on how the shards are placed on ranks (for a
//! power-of-two count per rank). Without a pool (the library and its tests) there is one shard
//! per rank and candle keeps its own threads; an explicit split runs its shards one after the
//! other.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

use crate::dist::{self, Layout, order};

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// The threads a process is asked for, read before [`single_threaded_candle`] hides them.
#[derive(Debug, Clone, Copy)]
pub struct Threads {
    /// `--threads` or RAYON_NUM_THREADS.
    explicit: Option<usize>,
    /// candle's default: the physical cores.
    cores: usize,
}

impl Threads {
    pub fn asked(threads: Option<usize>) -> Self {
        let explicit = threads.or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &usize| n > 0)
        });
        Self {
            explicit,
            cores: candle_core::utils::get_num_threads(),
        }
    }

    /// The threads of one of `processes_here` ranks on this machine: the explicit count, else
    /// the cores divided among the ranks.
    pub fn per_process(&self, processes_here: usize) -> usize {
        self.explicit
            .unwrap_or(self.cores / processes_here.max(1))
            .max(1)
    }
}

/// Makes candle itself single-threaded: the shards are the parallelism.
///
/// # Safety
/// It sets environment variables (candle reads its thread settings from them, once): call it
/// at start-up, before any other thread exists and before candle's first operation.
pub unsafe fn single_threaded_candle() {
    // SAFETY: the caller guarantees that no other thread exists yet.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// Starts the pool of `n` shard threads (none for one). Returns the shard count.
pub fn start_pool(n: usize) -> usize {
    if n > 1
        && let Ok(pool) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("ldm-shard-{i}"))
            .build()
    {
        let _ = POOL.set(pool);
    }
    shard_count()
}

/// The configured number of shards per rank (1 without [`start_pool`]).
pub fn shard_count() -> usize {
    POOL.get().map_or(1, rayon::ThreadPool::current_num_threads)
}

/// 0..n in at most `shards` contiguous, non-empty ranges whose lengths differ by at most one.
pub fn split(n: usize, shards: usize) -> Vec<Range<usize>> {
    let k = shards.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// 0..sizes.len() in at most `shards` contiguous, non-empty ranges of about equal total size
/// (the parameters of a network, to split an optimizer step).
pub fn split_by_size(sizes: &[usize], shards: usize) -> Vec<Range<usize>> {
    let total: usize = sizes.iter().sum();
    let k = shards.clamp(1, sizes.len().max(1));
    let mut out = Vec::with_capacity(k);
    let (mut start, mut acc) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        acc += size;
        if out.len() + 1 < k && acc * k >= total * (out.len() + 1) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// How batches on `device` are split over the job.
pub fn layout(device: &Device) -> Layout {
    Layout {
        world_size: dist::world().size,
        shards_per_rank: shard_count_on(device),
    }
}

/// The shards of a batch of `n` on `device`, of every rank (see [`layout`]).
pub fn shards(n: usize, device: &Device) -> Vec<Range<usize>> {
    split(n, layout(device).total())
}

/// The shard count per rank for work on `device`: [`shard_count`] on the CPU, one elsewhere (a
/// GPU parallelises inside its ops).
pub fn shard_count_on(device: &Device) -> usize {
    if device.is_cpu() { shard_count() } else { 1 }
}

/// The indices of this rank's shards among `count` global shards, `per_rank` to a rank (all of
/// them on a world of one, whatever split the caller chose).
fn own(count: usize, per_rank: usize) -> Range<usize> {
    let w = dist::world();
    if w.size == 1 {
        return 0..count;
    }
    (w.rank * per_rank).min(count)..((w.rank + 1) * per_rank).min(count)
}

fn dist_error(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

/// `f(i, range)` of every range, in order, each on its own pool thread (one after the other
/// without a pool or with a single range).
pub fn map<R: Send, E: Send>(
    ranges: &[Range<usize>],
    f: impl Fn(usize, Range<usize>) -> std::result::Result<R, E> + Sync,
) -> std::result::Result<Vec<R>, E> {
    match POOL.get() {
        Some(pool) if ranges.len() > 1 => {
            use rayon::prelude::*;
            pool.install(|| {
                ranges
                    .par_iter()
                    .enumerate()
                    .map(|(i, r)| f(i, r.clone()))
                    .collect()
            })
        }
        _ => ranges
            .iter()
            .enumerate()
            .map(|(i, r)| f(i, r.clone()))
            .collect(),
    }
}

/// `f` of every item, in order, the items split over the threads (on `device`) into runs of
/// about equal total `size` (the parameters of a network, for an optimizer step).
pub fn map_balanced<T: Sync, R: Send>(
    items: &[T],
    size: impl Fn(&T) -> usize,
    device: &Device,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let sizes: Vec<usize> = items.iter().map(size).collect();
    let runs = split_by_size(&sizes, shard_count_on(device));
    let parts = map(&runs, |_, r| {
        items[r].iter().map(&f).collect::<Result<Vec<R>>>()
    })?;
    Ok(parts.into_iter().flatten().collect())
}

/// `f` over the shards of a batch of `n`, its outputs joined along the first dimension (as
/// f32), on every rank: each rank runs its own shards and the ranks' rows are gathered.
pub fn batched<E: Send + From<candle_core::Error>>(
    n: usize,
    device: &Device,
    f: impl Fn(Range<usize>) -> std::result::Result<Tensor, E> + Sync,
) -> std::result::Result<Tensor, E> {
    let all = shards(n, device);
    let per_rank = shard_count_on(device);
    let parts = map(&all[own(all.len(), per_rank)], |_, r| f(r))?;
    let local = match parts.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => Some(Tensor::cat(&parts, 0)?),
    };
    if dist::world().size == 1 {
        return local.ok_or_else(|| candle_core::Error::Msg("an empty batch".into()).into());
    }
    // Rank 0 has shard 0; the others know a row's shape from their own rows, unless the batch
    // is too small to give every rank one.
    let every_rank_has_rows = all.len() > (dist::world().size - 1) * per_rank;
    Ok(gather_rows(local, every_rank_has_rows, device)?)
}

/// Every rank's rows, in rank order, as one f32 tensor on `device`.
fn gather_rows(local: Option<Tensor>, has_shape: bool, device: &Device) -> Result<Tensor> {
    let (values, mut shape) = match &local {
        Some(t) => (
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            t.dims()[1..].to_vec(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    if !has_shape {
        let bytes: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        shape = dist::broadcast(bytes)
            .map_err(dist_error)?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
            .collect();
    }
    let all: Vec<f32> = dist::gather_f32(&values)
        .map_err(dist_error)?
        .into_iter()
        .flatten()
        .collect();
    let row: usize = shape.iter().product();
    let mut dims = vec![all.len() / row.max(1)];
    dims.extend(shape);
    Tensor::from_vec(all, dims, device)
}

/// One shard's (or several shards' summed) gradients and logged terms.
type Part = (GradStore, Vec<f64>);

/// `a + b` for the gradients of `vars` (a gradient missing from one side is the other's) and
/// the terms.
fn add_parts(vars: &[(String, Var)], (mut ga, ta): Part, (gb, tb): Part) -> Result<Part> {
    for (_, var) in vars {
        let Some(g) = gb.get(var.as_tensor()) else {
            continue;
        };
        let sum = match ga.get(var.as_tensor()) {
            Some(acc) => (acc + g)?,
            None => g.clone(),
        };
        ga.insert(var.as_tensor(), sum);
    }
    Ok((ga, order::add_into(ta, tb)))
}

/// Gradients of a loss summed over shards. `f(i, range)` (global shard i) returns the shard's
/// scalar terms, the first being its part of the loss (its sum over the shard divided by the
/// whole batch, so the parts add up to the batch loss); the rest are only summed for logging.
/// This rank computes its own shards; the sum over all shards, in the order of
/// [`order::pairwise`], ends on every rank. Returns the gradients of `vars` and every term
/// summed over the shards.
pub fn grads<E: Send + From<candle_core::Error>>(
    vars: &[(String, Var)],
    ranges: &[Range<usize>],
    f: impl Fn(usize, Range<usize>) -> std::result::Result<Vec<Tensor>, E> + Sync,
) -> std::result::Result<(GradStore, Vec<f64>), E> {
    let device = vars
        .first()
        .map_or(Device::Cpu, |(_, v)| v.device().clone());
    let mine = own(ranges.len(), shard_count_on(&device));
    let first = mine.start;
    let parts = map(&ranges[mine], |i, r| -> std::result::Result<_, E> {
        let terms = f(first + i, r)?;
        let Some(loss) = terms.first() else {
            return Err(candle_core::Error::Msg("a shard returned no loss".into()).into());
        };
        let grads = loss.backward()?;
        let values = terms
            .iter()
            .map(|t| Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)))
            .collect::<Result<Vec<f64>>>()?;
        Ok((grads, values))
    })?;
    let local = order::pairwise(parts, |a, b| add_parts(vars, a, b))?;
    if dist::world().size > 1 {
        return Ok(sum_over_ranks(vars, local)?);
    }
    local.ok_or_else(|| candle_core::Error::Msg("an empty batch has no gradient".into()).into())
}

/// The sum over ranks of every rank's summed shards (`None`: the batch gave this rank none).
fn sum_over_ranks(vars: &[(String, Var)], local: Option<Part>) -> Result<Part> {
    let device = vars
        .first()
        .map_or(Device::Cpu, |(_, v)| v.device().clone());
    let grad = |var: &Var| local.as_ref().and_then(|(g, _)| g.get(var.as_tensor()));
    let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
    let present: Vec<bool> = vars.iter().map(|(_, v)| grad(v).is_some()).collect();
    let flat = vars
        .iter()
        .map(|(_, var)| match grad(var) {
            Some(g) => g.to_dtype(DType::F32)?.flatten_all(),
            None => Tensor::zeros(var.elem_count(), DType::F32, &device),
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let flat = match flat.as_slice() {
        [] => Tensor::zeros(0, DType::F32, &device)?,
        _ => Tensor::cat(&flat, 0)?,
    };
    let (summed, present) = dist::sum_gradients(&flat, &sizes, &present).map_err(dist_error)?;
    let (mut store, terms) = match local {
        Some(part) => part,
        // A store to fill: the gradients of a constant hold nothing for `vars`.
        None => (
            Tensor::zeros((), DType::F32, &Device::Cpu)?.backward()?,
            Vec::new(),
        ),
    };
    let mut at = 0;
    for ((_, var), (&size, &present)) in vars.iter().zip(sizes.iter().zip(&present)) {
        if present {
            let g = summed
                .narrow(0, at, size)?
                .reshape(var.shape())?
                .to_dtype(var.dtype())?;
            store.insert(var.as_tensor(), g);
        } else {
            store.remove(var.as_tensor());
        }
        at += size;
    }
    let every = dist::gather_f64(&terms).map_err(dist_error)?;
    let items: Vec<Option<Vec<f64>>> = every
        .into_iter()
        .map(|t| (!t.is_empty()).then_some(t))
        .collect();
    let terms = order::pairwise(items, |a, b| {
        Ok::<_, candle_core::Error>(order::add_present(a, b, order::add_into))
    })?
    .flatten()
    .unwrap_or_default();
    Ok((store, terms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly_without_empty_shards() {
        assert_eq!(split(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(split(2, 4), vec![0..1, 1..2]);
        assert_eq!(split(5, 1), vec![0..5]);
        assert!(split(0, 2).is_empty());
        assert_eq!(split(7, 0), vec![0..7]);
    }

    #[test]
    fn splits_by_size_into_balanced_runs() {
        assert_eq!(split_by_size(&[5, 5, 5, 5], 2), vec![0..2, 2..4]);
        assert_eq!(split_by_size(&[100, 1, 1, 1], 2), vec![0..1, 1..4]);
        assert_eq!(split_by_size(&[1, 1, 1, 100], 2), vec![0..4]);
        assert_eq!(split_by_size(&[3, 3, 3], 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(split_by_size(&[7], 4), vec![0..1]);
        assert!(split_by_size(&[], 2).is_empty());
    }

    #[test]
    fn sharded_gradients_add_up_to_the_whole_batch() {
        let dev = Device::Cpu;
        let w = Var::new(&[0.5f32, -1.5, 2.0], &dev).unwrap();
        let x = Tensor::new(
            &[[1f32, 2., 3.], [4., 5., 6.], [-1., 0., 1.], [2., 2., 2.]],
            &dev,
        )
        .unwrap();
        let vars = vec![("w".to_string(), w.clone())];
        let loss = |_: usize, r: Range<usize>| -> Result<Vec<Tensor>> {
            let xs = x.narrow(0, r.start, r.len())?;
            let y = xs.broadcast_mul(w.as_tensor())?.sum(1)?.sqr()?;
            Ok(vec![(y.sum_all()? / 4.0)?, y.sum_all()?])
        };
        let (whole, whole_terms) = grads(&vars, &split(4, 1), loss).unwrap();
        let (parts, part_terms) = grads(&vars, &split(4, 3), loss).unwrap();
        let g = |s: &GradStore| s.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in g(&whole).iter().zip(g(&parts)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(whole_terms.len(), 2);
        for (a, b) in whole_terms.iter().zip(&part_terms) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // d/dw of mean((x.w)^2) by hand for the first weight: 2/4 sum_i (x_i.w) x_i0
        let dots: Vec<f32> = [[1f32, 2., 3.], [4., 5., 6.], [-1., 0., 1.], [2., 2., 2.]]
            .iter()
            .map(|r| r[0] * 0.5 - r[1] * 1.5 + r[2] * 2.0)
            .collect();
        let want: f32 = dots
            .iter()
            .zip([1f32, 4., -1., 2.])
            .map(|(d, x0)| 2.0 * d * x0 / 4.0)
            .sum();
        assert!((g(&parts)[0] - want).abs() < 1e-4);
    }

    #[test]
    fn map_keeps_the_order_of_the_shards() {
        let dev = Device::Cpu;
        let ranges = split(5, 2);
        let parts = map(&ranges, |_, r| {
            Tensor::arange(r.start as u32, r.end as u32, &dev)
        })
        .unwrap();
        let joined = Tensor::cat(&parts, 0).unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(joined, vec![0, 1, 2, 3, 4]);
    }
}
