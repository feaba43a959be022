#!/usr/bin/env python3
"""Plots a run's curves from its TensorBoard events (read with TensorBoard's own reader).

Usage: benches/plot_curves.py RUN_DIR OUT.png [TAG ...]
       (default tags: every `*/held_out/loss` and `*/loss/mse` of the run)

Each tag gets its own panel (three to a row), against the run step (TensorBoard's step: a stage's steps count
on from the training stages before it). Needs `pip install tensorboard matplotlib`.
"""

import sys

from tensorboard.backend.event_processing import event_accumulator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    run_dir, out = sys.argv[1], sys.argv[2]
    ea = event_accumulator.EventAccumulator(run_dir, size_guidance={"scalars": 0})
    ea.Reload()
    available = ea.Tags()["scalars"]
    tags = sys.argv[3:] or [
        t for t in available if t.endswith("/held_out/loss") or t.endswith("/loss/mse")
    ]
    missing = [t for t in tags if t not in available]
    if missing or not tags:
        print(f"no scalars {missing or 'to plot'} in {run_dir}; it has: {available}", file=sys.stderr)
        sys.exit(1)
    cols = min(len(tags), 3)
    rows = -(-len(tags) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(tags):]:
        ax.set_visible(False)
    for ax, tag in zip(axes.flat, tags):
        points = ea.Scalars(tag)
        ax.plot([p.step for p in points], [p.value for p in points], marker="." if len(points) < 40 else None)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("run step")
        if "loss" in tag:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main()
