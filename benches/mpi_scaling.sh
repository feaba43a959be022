#!/usr/bin/env bash
# Data-parallel scaling on one machine: the diffusion stage of experiments/mnist_kl_f4.toml (its
# UNet and text encoder, batch 64) trained by `mpirun -np 2`, one thread per rank, against one
# process of two threads. Both split every batch into 2 shards, so both compute the same numbers;
# what differs is threads in one process against processes that all-reduce over MPI. The other
# stages are cut short (they are not measured), and so are the diffusion stage's held-out set
# and judged samples (measured once, at its last step). Prints each configuration's `ldm  done:` line
# (steps, time, steps/s) and the ratio of the rates.
#
# Usage: benches/mpi_scaling.sh [STEPS]   (after `cargo build --release --features mpi`)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
exe=target/release/ldm-run
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sets=(--set stages.vae.steps=20 --set stages.vae.eval_images=100
  --set "stages.ldm.steps=$steps" --set "stages.ldm.checkpoint_every=$steps"
  --set logging.sample_every=1000000 --set stages.clf.steps=5 --set stages.eval.samples=16
  --set stages.ldm.held_out_images=16 --set stages.ldm.judge_samples=2)

rate() { sed -n 's/^ldm  done: .*(\([0-9.]*\) steps\/s)$/\1/p' "$1"; }

RAYON_NUM_THREADS=2 "$exe" experiments/mnist_kl_f4.toml --runs-dir "$tmp/one" "${sets[@]}" \
  2>"$tmp/one.log"
RAYON_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -np 2 \
  "$exe" experiments/mnist_kl_f4.toml --runs-dir "$tmp/mpi" "${sets[@]}" 2>"$tmp/mpi.log"

one=$(rate "$tmp/one.log")
mpi=$(rate "$tmp/mpi.log")
echo "1 process x 2 threads:    $(grep '^ldm  done:' "$tmp/one.log")"
echo "mpirun -np 2 x 1 thread:  $(grep '^ldm  done:' "$tmp/mpi.log")"
echo "ratio (mpirun / threads): $(python3 -c "print(f'{$mpi / $one:.2f}')")"
