"""Run ../shared/bench/torch_reference.py on a CUDA GPU.

The reference builds its tensors with PyTorch's default device and times steps with
time.perf_counter; this wrapper makes CUDA the default device and waits for the GPU before
every clock read, so each timed step includes its kernels. Usage:

    python3 benches/torch_gpu.py PATH/TO/torch_reference.py [reference flags...]
"""
import runpy
import sys
import time

import torch


def main():
    if len(sys.argv) < 2 or not torch.cuda.is_available():
        sys.exit("usage: torch_gpu.py torch_reference.py [flags] (needs a CUDA GPU)")
    torch.set_default_device("cuda")
    clock = time.perf_counter

    def synced():
        torch.cuda.synchronize()
        return clock()

    time.perf_counter = synced
    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})", flush=True)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
