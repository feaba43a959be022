#!/usr/bin/env bash
# Stops the cluster tests/slurm/start.sh DIR brought up: cancels its jobs, then ends slurmd,
# slurmctld and munged by the process ids in DIR/run/. Usage: stop.sh DIR
set -uo pipefail
dir=${1:?usage: stop.sh DIR}
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF="$dir/slurm.conf"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$dir/run/slurmctld.pid"; then
  scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 1
  done
fi
for daemon in slurmd slurmctld munged; do
  pidfile="$dir/run/$daemon.pid"
  alive "$pidfile" || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$pidfile"
done
exit 0
