//! The cross-rank gradient sum of [`super::order`] over any point-to-point transport whose
//! vectors stay where they lie (NCCL on GPUs, [`super::nccl`]): every rank sends chunk r of
//! its vector to rank r ([`Exchange::exchange`], one round), folds the chunk it received from
//! all ranks in the one pairwise order on its device ([`order::fold_chunk_tensors`]), and
//! sends the folded chunk to every rank (a second round). The bytes on the wire of a ring
//! all-reduce, and the bits of the host path over MPI. Tested here on the CPU with threads for
//! ranks.

use std::ops::Range;

use anyhow::Context;
use candle_core::Tensor;

use super::order;

/// One round of point-to-point messages between the ranks of a job, all in flight at once.
/// The vectors sent are contiguous; they must stay alive until the round is over, which they
/// do: the caller holds them until `exchange` returns.
pub trait Exchange {
    /// Sends `sends[q]` (a vector of f32, where there is one) to rank q, for every q (this
    /// rank included), and receives from every rank r a vector of `lens[r]` values (none
    /// where `lens[r]` is 0). Returns the received vectors in rank order.
    fn exchange(
        &self,
        sends: &[Option<Tensor>],
        lens: &[usize],
    ) -> anyhow::Result<Vec<Option<Tensor>>>;
}

/// The sum over the `ranks` ranks of every rank's `flat` vector, on this rank (`rank`), in the
/// one pairwise order: `present[r * sizes.len() + s]` says whether rank r has segment s of
/// `sizes` (its values are zeros where it has not).
pub fn sum(
    ex: &impl Exchange,
    rank: usize,
    ranks: usize,
    flat: &Tensor,
    sizes: &[usize],
    present: &[bool],
) -> anyhow::Result<Tensor> {
    // The chunks sent are views of one buffer, as a transport that reads device memory needs.
    let flat = flat.contiguous()?;
    let n = flat.elem_count();
    let chunks: Vec<Range<usize>> = (0..ranks).map(|r| order::chunk(n, ranks, r)).collect();
    let mine = chunks[rank].clone();

    let sends = chunks
        .iter()
        .map(|part| {
            (!part.is_empty())
                .then(|| flat.narrow(0, part.start, part.len()))
                .transpose()
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let received = ex.exchange(&sends, &vec![mine.len(); ranks])?;
    let pieces: Vec<Tensor> = received.into_iter().flatten().collect();
    if pieces.len() != ranks && !mine.is_empty() {
        anyhow::bail!("{} of {ranks} ranks sent their chunk", pieces.len());
    }
    let folded = order::fold_chunk_tensors(&pieces, mine.clone(), sizes, present)
        .context("folding the received gradients")?;

    let sends = vec![(!mine.is_empty()).then_some(folded); ranks];
    let lens: Vec<usize> = chunks.iter().map(|part| part.len()).collect();
    let received = ex.exchange(&sends, &lens)?;
    let parts: Vec<Tensor> = received.into_iter().flatten().collect();
    match parts.as_slice() {
        [] => Ok(flat.zeros_like()?),
        _ => Ok(Tensor::cat(&parts, 0)?),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};

    use candle_core::Device;

    use super::*;
    use crate::rng::Rng;

    /// A rank of a job whose ranks are threads of this process: a channel from every rank to
    /// every rank, messages as host vectors.
    struct Threads {
        rank: usize,
        to: Vec<Sender<Vec<f32>>>,
        from: Vec<Receiver<Vec<f32>>>,
    }

    impl Exchange for Threads {
        fn exchange(
            &self,
            sends: &[Option<Tensor>],
            lens: &[usize],
        ) -> anyhow::Result<Vec<Option<Tensor>>> {
            for (q, t) in sends.iter().enumerate() {
                if let Some(t) = t {
                    anyhow::ensure!(t.is_contiguous(), "a strided vector sent to {q}");
                    self.to[q].send(t.to_vec1::<f32>()?)?;
                }
            }
            lens.iter()
                .enumerate()
                .map(|(r, &len)| {
                    if len == 0 {
                        return Ok(None);
                    }
                    let v = self.from[r].recv()?;
                    anyhow::ensure!(
                        v.len() == len,
                        "rank {} got {} values from {r}, not {len}",
                        self.rank,
                        v.len()
                    );
                    Ok(Some(Tensor::new(v, &Device::Cpu)?))
                })
                .collect()
        }
    }

    /// `ranks` ranks wired to each other.
    fn job(ranks: usize) -> Vec<Threads> {
        // wires[src][dst]
        let mut senders: Vec<Vec<Option<Sender<Vec<f32>>>>> = (0..ranks)
            .map(|_| (0..ranks).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<Option<Receiver<Vec<f32>>>>> = (0..ranks)
            .map(|_| (0..ranks).map(|_| None).collect())
            .collect();
        for src in 0..ranks {
            for dst in 0..ranks {
                let (tx, rx) = channel();
                senders[src][dst] = Some(tx);
                receivers[dst][src] = Some(rx);
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| Threads {
                rank,
                to: to.into_iter().flatten().collect(),
                from: from.into_iter().flatten().collect(),
            })
            .collect()
    }

    /// Every rank's sum over a job of threads, each from its own vector.
    fn sums(vectors: &[Vec<f32>], sizes: &[usize], present: &[bool]) -> Vec<Vec<f32>> {
        let ranks = vectors.len();
        std::thread::scope(|s| {
            let handles: Vec<_> = job(ranks)
                .into_iter()
                .zip(vectors)
                .map(|(ex, v)| {
                    s.spawn(move || {
                        // Every other element of a (n, 2) matrix: a strided vector.
                        let column = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
                        let flat = Tensor::stack(&[&column, &column.zeros_like().unwrap()], 1)
                            .and_then(|m| m.narrow(1, 0, 1)?.squeeze(1))
                            .unwrap();
                        assert!(flat.elem_count() < 2 || !flat.is_contiguous());
                        sum(&ex, ex.rank, ranks, &flat, sizes, present)
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// The host path's sum: each rank's chunk folded from all ranks' vectors, the chunks joined.
    fn host(vectors: &[Vec<f32>], sizes: &[usize], present: &[bool]) -> Vec<f32> {
        let (ranks, n) = (vectors.len(), vectors[0].len());
        (0..ranks)
            .flat_map(|rank| {
                let part = order::chunk(n, ranks, rank);
                let received: Vec<f32> = vectors
                    .iter()
                    .flat_map(|v| v[part.clone()].to_vec())
                    .collect();
                order::fold_chunk(&received, ranks, part, sizes, present)
            })
            .collect()
    }

    #[test]
    fn every_rank_ends_with_the_bits_of_the_host_sum() {
        let mut rng = Rng::new(5);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // (ranks, segment sizes): vectors longer than the world, and one shorter (empty chunks).
        for (ranks, sizes) in [
            (2, vec![5, 3, 7]),
            (3, vec![4, 1, 6, 2]),
            (4, vec![1, 1]),
            (3, vec![1]),
        ] {
            let n: usize = sizes.iter().sum();
            // Segment 1 is absent on rank 0; the last segment on every rank but the last.
            let segments = sizes.len();
            let present: Vec<bool> = (0..ranks)
                .flat_map(|r| {
                    (0..segments).map(move |s| {
                        !(s == 1 && r == 0) && (s + 1 < segments || r + 1 == ranks || segments == 1)
                    })
                })
                .collect();
            let vectors: Vec<Vec<f32>> = (0..ranks)
                .map(|r| {
                    let mut v = rng.normal_vec(n);
                    let mut at = 0;
                    for (s, &size) in sizes.iter().enumerate() {
                        if !present[r * segments + s] {
                            v[at..at + size].fill(0.0);
                        }
                        at += size;
                    }
                    v
                })
                .collect();
            let want = host(&vectors, &sizes, &present);
            for (rank, got) in sums(&vectors, &sizes, &present).iter().enumerate() {
                assert_eq!(
                    bits(got),
                    bits(&want),
                    "{ranks} ranks, sizes {sizes:?}, rank {rank}"
                );
            }
        }
    }
}
