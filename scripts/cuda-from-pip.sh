#!/usr/bin/env bash
# Prints the environment for building ldm-run with `--features cuda` or `--features nccl` from
# NVIDIA's pip wheels, on a machine without a CUDA toolkit, and even without a GPU or driver:
#
#   eval "$(scripts/cuda-from-pip.sh)"
#   cargo build --release --features nccl
#
# It takes the wheels from python3 when it has them (`import nvidia`: cu13 with nvcc, and nccl),
# else installs them with pip into target/cuda/wheels. It lays out target/cuda as the toolkit root
# that cudarc's build links against: lib64 holds the libraries under their unversioned names and
# a stub libcuda.so (every cu* entry point of cuda.h, returning an error) with the driver's soname,
# so that the binary loads the real driver library, libcuda.so.1, where it runs. Run the binary
# with the wheels' libraries on LD_LIBRARY_PATH (the line it prints) or with the machine's own.
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU generation the kernels are built for.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/cuda"
mkdir -p "$root/lib64"

find_wheels() {
  "$1" - <<'PY' 2>/dev/null
import os, nvidia
for p in nvidia.__path__:
    if os.path.exists(os.path.join(p, "cu13", "bin", "nvcc")) and os.path.isdir(os.path.join(p, "nccl", "lib")):
        print(p)
        break
PY
}

wheels="$(find_wheels python3 || true)"
if [ -z "$wheels" ]; then
  echo "scripts/cuda-from-pip.sh: installing the CUDA 13.2 and NCCL wheels into target/cuda/wheels" >&2
  python3 -m pip install --quiet --target "$root/wheels" \
    "nvidia-cuda-nvcc==13.2.*" "nvidia-cuda-crt==13.2.*" "nvidia-nvvm==13.2.*" \
    "nvidia-cuda-runtime==13.2.*" "nvidia-cuda-nvrtc==13.2.*" "nvidia-cuda-cccl" \
    "nvidia-cublas" "nvidia-curand" "nvidia-nccl-cu13" >&2
  wheels="$(PYTHONPATH="$root/wheels" find_wheels python3)"
fi
cu="$wheels/cu13"

for lib in cudart cublas cublasLt curand nvrtc; do
  ln -sfn "$(ls "$cu/lib/lib$lib.so."* | sort | head -n 1)" "$root/lib64/lib$lib.so"
done
ln -sfn "$wheels/nccl/lib/libnccl.so.2" "$root/lib64/libnccl.so"
ln -sfn "$cu/include" "$root/include"
ln -sfn "$cu/bin" "$root/bin"

if [ ! -e "$root/lib64/libcuda.so" ]; then
  grep -o '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u |
    sed 's/.*/int &(void) { return 999; }/' >"$root/libcuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/libcuda.so" "$root/libcuda-stub.c"
fi

echo "export CUDA_ROOT='$root'"
echo "export PATH='$cu/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}"
echo "# at run time, unless the machine has its own CUDA 13 and NCCL libraries:"
echo "# export LD_LIBRARY_PATH='$cu/lib:$wheels/nccl/lib'"
