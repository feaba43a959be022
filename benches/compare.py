#!/usr/bin/env python3
"""Side-by-side CPU speed of ldm-run and the PyTorch reference on the same networks.

Prints the CPU model and the instruction sets both use (ldm-run's kernels and its `gemm`,
PyTorch's CPU capability), so a table made from it says which machine it describes.

For each experiment file, runs ../shared/bench/torch_reference.py (with flags mirroring the
experiment's [autoencoder], [unet] and [conditioning]) and `ldm-run bench` alternately,
`--rounds` times each, and prints the median ms/step of every figure and the ratio
ldm-run speed / PyTorch speed (> 1: ldm-run is faster).

  python3 benches/compare.py experiments/mnist_kl_f4_seed.toml experiments/mnist_kl_f4.toml

Needs: a release build (cargo build --release) and `pip install torch`.
"""
import argparse
import re
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(?P<name>[a-z ]+ b\d+): (?P<ms>[0-9.]+) ms/step")


def torch_flags(exp, tokens):
    """The reference's flags for the networks an experiment file describes."""
    ae, un = exp.get("autoencoder", {}), exp.get("unet", {})
    ds, cond = exp.get("dataset", {}), exp.get("conditioning", {})
    ints = lambda v: ",".join(str(x) for x in v)
    size = ds.get("image_size", 32)
    mult = ae.get("ch_mult", [1, 1, 2])
    return [
        "--channels", str(ds.get("channels", 1)), "--size", str(size),
        "--z", str(ae.get("z_channels", 4)), "--latent", str(size >> (len(mult) - 1)),
        "--vae-ch", str(ae.get("ch", 128)), "--vae-mult", ints(mult),
        "--vae-blocks", str(ae.get("num_res_blocks", 2)), "--vae-attn", ints(ae.get("attn_resolutions", [16, 8])),
        "--unet-ch", str(un.get("model_channels", 128)), "--unet-mult", ints(un.get("channel_mult", [1, 2, 2])),
        "--unet-blocks", str(un.get("num_res_blocks", 2)), "--unet-attn", ints(un.get("attention_resolutions", [4])),
        "--attn-dim", str(un.get("num_heads", 1) * un.get("head_channels", 64)),
        "--context", str(un.get("context_dim", 768)),
        "--tokens", str(tokens or cond.get("max_tokens", 8)),
        "--dropout", str(un.get("dropout", 0.1)),
    ]


def figures(cmd):
    """The figures a run prints, and its `cpu: ...` line (ldm-run's) if any."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    found, cpu = {}, None
    for line in out.stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            found[m["name"]] = float(m["ms"])
        elif line.startswith("cpu: "):
            cpu = line[len("cpu: "):]
    return found, cpu


def torch_build():
    """PyTorch's version and the vector instruction set its CPU kernels chose."""
    probe = "import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else f"unknown ({out.stderr.strip()[-200:]})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, help="context tokens (default: the experiment's max_tokens; 77 for the seed)")
    p.add_argument("--torch", default=str(ROOT.parent / "shared/bench/torch_reference.py"))
    a = p.parse_args()
    binary = ROOT / "target/release/ldm-run"
    print(f"PyTorch: {torch_build()}")
    for path in a.experiments:
        exp = tomllib.loads(Path(path).read_text())
        tokens = a.tokens or (77 if exp["experiment"]["name"].endswith("_seed") else None)
        torch_cmd = [sys.executable, a.torch, "--threads", str(a.threads), "--steps", str(a.steps)] + torch_flags(exp, tokens)
        ldm_cmd = [str(binary), "bench", path, "--device", "cpu", "--threads", str(a.threads), "--steps", str(a.steps)]
        if tokens:
            ldm_cmd += ["--tokens", str(tokens)]
        # The reference's GroupNorm always has 32 groups: a network with other groups has no twin.
        skip = [net for net, section in (("vae", "autoencoder"), ("unet", "unet"))
                if exp.get(section, {}).get("norm_groups", 32) != 32]
        if skip:
            print(f"\n{path}: {' and '.join(skip)} left out (norm_groups != 32, the reference's)")
        if len(skip) == 2:
            continue
        if skip:
            torch_cmd += ["--skip", skip[0]]
            ldm_cmd += ["--skip", skip[0]]
        runs = {"torch": [], "ldm-run": []}
        cpu = None
        for _ in range(a.rounds):
            runs["torch"].append(figures(torch_cmd)[0])
            found, cpu = figures(ldm_cmd)
            runs["ldm-run"].append(found)
        print(f"\n{path}  ({a.rounds} rounds, {a.steps} steps each, {a.threads} threads; medians)")
        print(f"ldm-run: {cpu or 'no cpu line (an older build?)'}")
        print(f"{'figure':28} {'torch ms':>10} {'ldm-run ms':>11} {'ratio':>7}")
        for name in runs["torch"][0]:
            t = statistics.median(r[name] for r in runs["torch"])
            l = statistics.median(r[name] for r in runs["ldm-run"] if name in r)
            print(f"{name:28} {t:10.1f} {l:11.1f} {t / l:7.2f}")


if __name__ == "__main__":
    main()
