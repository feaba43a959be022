//! The one order in which gradients are summed, on one process or many.
//!
//! Float addition is not associative, so a sum's bits depend on its order. Shards are summed
//! pairwise, level by level ([`pairwise`]): node `j` of level `k` always covers the items
//! `j * 2^k .. (j + 1) * 2^k`. A rank with `2^m` shards therefore computes exactly the level-`m`
//! node of the global tree, and the sum over ranks, taken pairwise in rank order, is the same
//! tree: 2 ranks x 2 shards give the bits of 1 process x 4 shards, 2 x 1 those of 1 x 2.
//!
//! Across ranks the sum is a reduce-scatter written out (all-to-all, then each rank folds its
//! chunk over the ranks in that order) followed by an all-gather: the bandwidth of a ring
//! all-reduce, 2 (p - 1) / p of the vector per rank, and every rank ends with the same bits,
//! which MPI's own all-reduce does not promise.

use std::ops::Range;

/// Combines `items` pairwise, level by level: neighbours 0+1, 2+3, ... form the next level, an
/// odd last item moves up unchanged. `None` for no items.
pub fn pairwise<T, E>(
    items: Vec<T>,
    mut add: impl FnMut(T, T) -> Result<T, E>,
) -> Result<Option<T>, E> {
    let mut level = items;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut it = level.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => add(a, b)?,
                None => a,
            });
        }
        level = next;
    }
    Ok(level.into_iter().next())
}

/// `a + b` where both are there, else the one that is (absent items take no part in a sum).
pub fn add_present<T>(a: Option<T>, b: Option<T>, add: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(add(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Element-wise `a += b`.
pub fn add_into<T: Copy + std::ops::Add<Output = T>>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    for (x, y) in a.iter_mut().zip(b) {
        *x = *x + y;
    }
    a
}

/// A vector of consecutive segments (the gradients of a network's parameters), each present or
/// absent (no gradient); an absent segment's values are zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    pub values: Vec<f32>,
    pub sizes: Vec<usize>,
    pub present: Vec<bool>,
}

/// The part of `0..n` that rank `rank` of `ranks` reduces.
pub fn chunk(n: usize, ranks: usize, rank: usize) -> Range<usize> {
    n * rank / ranks..n * (rank + 1) / ranks
}

/// The stretches of `part` to fold in one go: consecutive segments that every rank has or
/// lacks alike, as ranges within `part`, each with the ranks that have it.
fn runs(
    ranks: usize,
    part: &Range<usize>,
    sizes: &[usize],
    present: &[bool],
) -> Vec<(Range<usize>, Vec<bool>)> {
    let mut out: Vec<(Range<usize>, Vec<bool>)> = Vec::new();
    let mut start = 0;
    for (s, &size) in sizes.iter().enumerate() {
        let seg = start..start + size;
        start += size;
        let (lo, hi) = (seg.start.max(part.start), seg.end.min(part.end));
        if lo >= hi {
            continue;
        }
        let at = lo - part.start..hi - part.start;
        let have: Vec<bool> = (0..ranks).map(|r| present[r * sizes.len() + s]).collect();
        match out.last_mut() {
            Some((run, h)) if *h == have && run.end == at.start => run.end = at.end,
            _ => out.push((at, have)),
        }
    }
    out
}

/// The sum over ranks of the elements `part` of the vector, whatever holds the values (host
/// vectors, device tensors): `piece(r, at)` is rank `r`'s values of `part[at]`, and
/// `present[r * sizes.len() + s]` says whether rank `r` has segment `s`. Each element is
/// summed [`pairwise`] over the ranks that have its segment (`zeros` where none has). Returns
/// the folded stretches of `part` in order, for the caller to join.
pub fn fold_chunk_with<T, E>(
    ranks: usize,
    part: Range<usize>,
    sizes: &[usize],
    present: &[bool],
    piece: impl Fn(usize, Range<usize>) -> Result<T, E>,
    add: impl Fn(T, T) -> Result<T, E>,
    zeros: impl Fn(usize) -> Result<T, E>,
) -> Result<Vec<T>, E> {
    runs(ranks, &part, sizes, present)
        .into_iter()
        .map(|(at, have)| {
            let items = (0..ranks)
                .map(|r| have[r].then(|| piece(r, at.clone())).transpose())
                .collect::<Result<Vec<Option<T>>, E>>()?;
            let summed = pairwise(items, |a, b| {
                Ok(match (a, b) {
                    (Some(a), Some(b)) => Some(add(a, b)?),
                    (a, None) => a,
                    (None, b) => b,
                })
            })?
            .flatten();
            match summed {
                Some(t) => Ok(t),
                None => zeros(at.len()),
            }
        })
        .collect()
}

/// [`fold_chunk_with`] on the host: `received` holds every rank's values of `part`, one after
/// another in rank order.
pub fn fold_chunk(
    received: &[f32],
    ranks: usize,
    part: Range<usize>,
    sizes: &[usize],
    present: &[bool],
) -> Vec<f32> {
    let len = part.len();
    let folded = fold_chunk_with(
        ranks,
        part,
        sizes,
        present,
        |r, at| {
            Ok::<_, std::convert::Infallible>(
                received[r * len + at.start..r * len + at.end].to_vec(),
            )
        },
        |a, b| Ok(add_into(a, b)),
        |n| Ok(vec![0.0; n]),
    );
    match folded {
        Ok(runs) => runs.concat(),
        Err(never) => match never {},
    }
}

/// [`fold_chunk_with`] on tensors where they lie (a GPU): `pieces[r]` is rank `r`'s values of
/// `part`, a vector of f32. The same bits as [`fold_chunk`]: both add the same pairs.
pub fn fold_chunk_tensors(
    pieces: &[candle_core::Tensor],
    part: Range<usize>,
    sizes: &[usize],
    present: &[bool],
) -> candle_core::Result<candle_core::Tensor> {
    let device = match pieces.first() {
        Some(t) => t.device().clone(),
        None => candle_core::Device::Cpu,
    };
    let len = part.len();
    let folded = fold_chunk_with(
        pieces.len(),
        part,
        sizes,
        present,
        |r, at| pieces[r].narrow(0, at.start, at.len()),
        |a, b| a + b,
        |n| candle_core::Tensor::zeros(n, candle_core::DType::F32, &device),
    )?;
    if folded.is_empty() {
        return candle_core::Tensor::zeros(len, candle_core::DType::F32, &device);
    }
    candle_core::Tensor::cat(&folded, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The cross-rank sum as the MPI backend computes it, without MPI: every rank's chunk
    /// folded from all ranks' vectors, the chunks joined.
    fn over_ranks(ranks: &[Segments]) -> Segments {
        let p = ranks.len();
        let n = ranks[0].values.len();
        let sizes = ranks[0].sizes.clone();
        let present: Vec<bool> = ranks.iter().flat_map(|r| r.present.clone()).collect();
        let mut values = Vec::new();
        for rank in 0..p {
            let part = chunk(n, p, rank);
            let received: Vec<f32> = ranks
                .iter()
                .flat_map(|r| r.values[part.clone()].to_vec())
                .collect();
            values.extend(fold_chunk(&received, p, part, &sizes, &present));
        }
        let present = (0..sizes.len())
            .map(|s| ranks.iter().any(|r| r.present[s]))
            .collect();
        Segments {
            values,
            sizes,
            present,
        }
    }

    /// Pairwise sum of shards with absent segments, as one process sums its shards.
    fn local(shards: &[Segments], sizes: &[usize]) -> Segments {
        let per_segment = |s: usize, shard: &Segments| -> Option<Vec<f32>> {
            let start: usize = sizes[..s].iter().sum();
            shard.present[s].then(|| shard.values[start..start + sizes[s]].to_vec())
        };
        let mut out = Segments {
            values: Vec::new(),
            sizes: sizes.to_vec(),
            present: Vec::new(),
        };
        for (s, &size) in sizes.iter().enumerate() {
            let items: Vec<Option<Vec<f32>>> = shards.iter().map(|x| per_segment(s, x)).collect();
            let sum = pairwise(items, |a, b| {
                Ok::<_, std::convert::Infallible>(add_present(a, b, add_into))
            })
            .unwrap()
            .flatten();
            out.present.push(sum.is_some());
            out.values.extend(sum.unwrap_or_else(|| vec![0.0; size]));
        }
        out
    }

    fn random_shards(count: usize, sizes: &[usize], rng: &mut Rng) -> Vec<Segments> {
        let n: usize = sizes.iter().sum();
        (0..count)
            .map(|i| {
                // Segment 1 is missing from every third shard, segment 3 from all of them.
                let present: Vec<bool> = (0..sizes.len())
                    .map(|s| !(s == 1 && i % 3 == 0) && s != 3)
                    .collect();
                let mut values = rng.normal_vec(n);
                let mut start = 0;
                for (s, &size) in sizes.iter().enumerate() {
                    if !present[s] {
                        values[start..start + size].fill(0.0);
                    }
                    start += size;
                }
                Segments {
                    values,
                    sizes: sizes.to_vec(),
                    present,
                }
            })
            .collect()
    }

    #[test]
    fn pairwise_pairs_neighbours_level_by_level() {
        let shown = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            pairwise(items, |a, b| Ok::<_, ()>(format!("({a}+{b})"))).unwrap()
        };
        assert_eq!(shown(0), None);
        assert_eq!(shown(1).unwrap(), "0");
        assert_eq!(shown(3).unwrap(), "((0+1)+2)");
        assert_eq!(shown(4).unwrap(), "((0+1)+(2+3))");
        assert_eq!(shown(6).unwrap(), "(((0+1)+(2+3))+(4+5))");
    }

    #[test]
    fn ranks_of_power_of_two_shards_give_the_bits_of_one_process() {
        let sizes = [5, 3, 7, 2, 4];
        let mut rng = Rng::new(3);
        for (ranks, per_rank, shards) in [(2, 1, 2), (2, 2, 4), (4, 1, 4), (3, 2, 6), (2, 4, 5)] {
            let all = random_shards(shards, &sizes, &mut rng);
            let want = local(&all, &sizes);
            let parts: Vec<Segments> = (0..ranks)
                .map(|r| {
                    let mine = (r * per_rank).min(shards)..((r + 1) * per_rank).min(shards);
                    local(&all[mine], &sizes)
                })
                .collect();
            let got = over_ranks(&parts);
            assert_eq!(got.present, want.present, "{ranks} x {per_rank}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got.values),
                bits(&want.values),
                "{ranks} x {per_rank}"
            );
            assert_eq!(got.present, [true, true, true, false, true]);
        }
    }

    #[test]
    fn tensors_fold_to_the_bits_of_the_host_fold() {
        let sizes = [5, 3, 7, 2, 4, 6];
        let n: usize = sizes.iter().sum();
        let ranks = 3;
        let mut rng = Rng::new(11);
        // Segment 1 is absent on rank 0, segment 3 everywhere, segment 5 only present on rank 2.
        let present: Vec<bool> = (0..ranks)
            .flat_map(|r| {
                (0..sizes.len()).map(move |s| !(s == 1 && r == 0) && s != 3 && (s != 5 || r == 2))
            })
            .collect();
        for rank in 0..ranks {
            let part = chunk(n, ranks, rank);
            let received = rng.normal_vec(ranks * part.len());
            let want = fold_chunk(&received, ranks, part.clone(), &sizes, &present);
            let pieces: Vec<candle_core::Tensor> = received
                .chunks(part.len())
                .map(|c| candle_core::Tensor::new(c, &candle_core::Device::Cpu).unwrap())
                .collect();
            let got = fold_chunk_tensors(&pieces, part.clone(), &sizes, &present)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "rank {rank}");
            assert_eq!(got.len(), part.len());
        }
        // Segment 3 (values 15..17) is absent everywhere: zeros, whoever folds it.
        let part = 0..n;
        let received = vec![1.0f32; ranks * n];
        let folded = fold_chunk(&received, ranks, part, &sizes, &present);
        assert_eq!(&folded[15..17], &[0.0, 0.0]);
        assert_eq!(folded[0], 3.0);
        assert_eq!(folded[5], 2.0, "segment 1 lacks rank 0");
        assert_eq!(folded[n - 1], 1.0, "segment 5 is rank 2's alone");
    }

    #[test]
    fn runs_join_segments_that_ranks_have_alike() {
        let sizes = [2, 3, 4, 1];
        // Two ranks: segment 2 is absent on rank 1.
        let present = [true, true, true, true, true, true, false, true];
        let got = runs(2, &(1..9), &sizes, &present);
        assert_eq!(
            got,
            vec![(0..4, vec![true, true]), (4..8, vec![true, false])]
        );
        assert_eq!(
            runs(2, &(9..10), &sizes, &present),
            vec![(0..1, vec![true, true])]
        );
        assert!(runs(2, &(4..4), &sizes, &present).is_empty());
    }

    #[test]
    fn chunks_cover_the_vector_once() {
        for (n, p) in [(10, 3), (2, 4), (0, 2), (7, 1)] {
            let parts: Vec<Range<usize>> = (0..p).map(|r| chunk(n, p, r)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[p - 1].end, n);
            assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
}
