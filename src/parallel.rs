//! Data parallelism over the CPU cores: one shard of every batch per core.
//!
//! The networks of this tool are small (8x8 latents, a few million weights), so splitting each
//! operation over the cores, as candle does, leaves them waiting on each other: every op ends
//! in a barrier, and candle's autograd bookkeeping between the ops runs on one core. The binary
//! therefore runs candle single-threaded ([`configure`]) and splits batches instead: each shard
//! runs its own forward (and backward) on its own core, and the shards' gradients are summed.
//!
//! Per-sample outputs do not depend on the split. A training step sums its gradient over the
//! shards in shard order, so its numbers depend on the shard count (the thread count), never
//! on scheduling. Without [`configure`] (the library and its tests) there is one shard and
//! candle keeps its own threads; an explicit split runs its shards one after the other.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Sets the number of shards (default: candle's thread count, one per physical core, or
/// RAYON_NUM_THREADS) and makes candle itself single-threaded. Returns the shard count.
///
/// # Safety
/// It sets environment variables (candle reads its thread settings from them, once): call it
/// at start-up, before any other thread exists and before candle's first operation.
pub unsafe fn configure(threads: Option<usize>) -> usize {
    let n = threads
        .unwrap_or_else(candle_core::utils::get_num_threads)
        .max(1);
    // SAFETY: the caller guarantees that no other thread exists yet.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
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

/// The configured number of shards (1 without [`configure`]).
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

/// The shards of a batch of `n` on `device` (see [`shard_count_on`]).
pub fn shards(n: usize, device: &Device) -> Vec<Range<usize>> {
    split(n, shard_count_on(device))
}

/// The shard count for work on `device`: [`shard_count`] on the CPU, one elsewhere (a GPU
/// parallelises inside its ops).
pub fn shard_count_on(device: &Device) -> usize {
    if device.is_cpu() { shard_count() } else { 1 }
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

/// `f` over the shards of a batch of `n`, its outputs joined along the first dimension.
pub fn batched<E: Send + From<candle_core::Error>>(
    n: usize,
    device: &Device,
    f: impl Fn(Range<usize>) -> std::result::Result<Tensor, E> + Sync,
) -> std::result::Result<Tensor, E> {
    let parts = map(&shards(n, device), |_, r| f(r))?;
    Ok(match parts.as_slice() {
        [one] => one.clone(),
        _ => Tensor::cat(&parts, 0)?,
    })
}

/// Gradients of a loss summed over shards. `f(i, range)` (shard i) returns the shard's scalar terms, the
/// first being its part of the loss (its sum over the shard divided by the whole batch, so
/// the parts add up to the batch loss); the rest are only summed for logging. Returns the
/// gradients of `vars` and every term summed over the shards.
pub fn grads<E: Send + From<candle_core::Error>>(
    vars: &[(String, Var)],
    ranges: &[Range<usize>],
    f: impl Fn(usize, Range<usize>) -> std::result::Result<Vec<Tensor>, E> + Sync,
) -> std::result::Result<(GradStore, Vec<f64>), E> {
    let parts = map(ranges, |i, r| -> std::result::Result<_, E> {
        let terms = f(i, r)?;
        let Some(loss) = terms.first() else {
            return Err(candle_core::Error::Msg("a shard returned no loss".into()).into());
        };
        let grads = loss.backward()?;
        let values = terms
            .iter()
            .map(|t| {
                Ok(f64::from(
                    t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?,
                ))
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok((grads, values))
    })?;
    let mut parts = parts.into_iter();
    let Some((mut summed, mut totals)) = parts.next() else {
        return Err(candle_core::Error::Msg("an empty batch has no gradient".into()).into());
    };
    for (grads, values) in parts {
        for (_, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let next = match summed.get(var.as_tensor()) {
                Some(acc) => (acc + g)?,
                None => g.clone(),
            };
            summed.insert(var.as_tensor(), next);
        }
        for (t, v) in totals.iter_mut().zip(values) {
            *t += v;
        }
    }
    Ok((summed, totals))
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
