#!/usr/bin/env bash
# Installs what the test suite needs on a Debian (or Ubuntu) machine that has the Rust toolchain,
# as root or through sudo, and skips whatever is there already:
#   - TensorBoard's Python reader (tests check the event files with it): into the system Python
#     if it can take it, else into a virtual environment under target/test-python, which the
#     tests look for;
#   - Fashion-MNIST, Debian's `dataset-fashion-mnist` (the data tests load it);
#   - Slurm and munge, `slurm-wlm munge` (tests/slurm.rs brings up a one-node cluster);
#   - Open MPI and what the `mpi` feature builds with, `openmpi-bin libopenmpi-dev
#     libclang-dev`, and `strace` (tests/mpi.rs runs jobs under mpirun and traces rank 1).
# MNIST is not installed here: the tests find it the way ldm-run does ($LDM_DATA_DIR, else
# data/) and download it there, MD5-checked, when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
[ "$(id -u)" -ne 0 ] && as_root=(sudo)

packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
if ! { command -v sbatch >/dev/null && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ]; }; then
  packages+=(slurm-wlm)
fi
[ -x /usr/sbin/munged ] || packages+=(munge)
command -v mpirun >/dev/null || packages+=(openmpi-bin)
dpkg -s libopenmpi-dev >/dev/null 2>&1 || packages+=(libopenmpi-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || packages+=(libclang-dev)
command -v strace >/dev/null || packages+=(strace)
command -v python3 >/dev/null || packages+=(python3)

has_tensorboard() { "$1" -c "import tensorboard" >/dev/null 2>&1; }
venv=target/test-python
if ! has_tensorboard python3 && ! has_tensorboard "$venv/bin/python"; then
  python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
fi

if [ ${#packages[@]} -gt 0 ]; then
  echo "tests/setup.sh: installing ${packages[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${packages[@]}"
fi

if ! has_tensorboard python3 && ! has_tensorboard "$venv/bin/python"; then
  echo "tests/setup.sh: installing tensorboard into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard
fi
