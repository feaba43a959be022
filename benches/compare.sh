#!/usr/bin/env bash
# Side-by-side timings: for every case, PyTorch (benches/torch_ops.py) and then
# examples/kernel_bench (stock candle and the fast kernels) run one right after the other, so
# both see the same load on a shared machine. Before each pair it waits (up to WAIT seconds)
# for the CPUs to be idle.
#
#   bash benches/compare.sh [ROUNDS] [RUNS] [FILTER]      (needs: pip install torch)
#
# THREADS (default 2) sets torch.set_num_threads and RAYON_NUM_THREADS alike.
# KERNEL_BENCH (default: target/release/examples/kernel_bench) and BENCH_FLAGS (e.g.
# --tune-alloc) pass through; the per-case PyTorch results land in $OUT (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}
RUNS=${2:-7}
FILTER=${3:-}
WAIT=${WAIT:-60}
THREADS=${THREADS:-2}
BIN=${KERNEL_BENCH:-${CARGO_TARGET_DIR:-target}/release/examples/kernel_bench}
OUT=$(mktemp -d)
[ -x "$BIN" ] || cargo build --release --example kernel_bench >&2

# Fraction of CPU time idle over one second, in percent.
idle_pct() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( 100 * idle / (total > 0 ? total : 1) ))
}

wait_quiet() {
  local waited=0
  while [ "$(idle_pct)" -lt 90 ] && [ $waited -lt "$WAIT" ]; do waited=$((waited + 1)); done
  [ $waited -lt "$WAIT" ] || echo "(still busy after ${WAIT}s: load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
}

mapfile -t CASES < <(python3 - <<'EOF'
import importlib.util
spec = importlib.util.spec_from_file_location("t", "benches/torch_ops.py")
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
print("\n".join(name for name, _, _ in m.CASES if not name.startswith("sdpa")))
EOF
)

echo "$(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) nproc $(nproc); threads $THREADS; rounds $ROUNDS runs $RUNS ${BENCH_FLAGS:-}"
echo '{"-": [1, 1]}' > "$OUT/none.json"
"$BIN" "no case has this name" --torch "$OUT/none.json" | tail -1
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    [[ -z "$FILTER" || "$c" == *"$FILTER"* ]] || continue
    wait_quiet
    python3 benches/torch_ops.py "$c" --runs "$RUNS" --threads "$THREADS" --json "$OUT/pt.json" > /dev/null
    RAYON_NUM_THREADS=$THREADS "$BIN" "$c" --runs "$RUNS" --torch "$OUT/pt.json" ${BENCH_FLAGS:-} | tail -1
    echo "    (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
