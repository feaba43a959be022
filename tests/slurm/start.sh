#!/usr/bin/env bash
# Brings up a private single-node Slurm cluster on localhost (munged, slurmctld, slurmd) with
# everything under one folder, for tests/slurm.rs. Usage: start.sh DIR
#
# Clients reach it through SLURM_CONF=DIR/slurm.conf; it uses its own munge socket and key and
# ports 16817/16818, so it neither needs nor disturbs a system Slurm or munge. Run as root (or
# as a user who owns DIR): no systemd, no cgroups (proctrack/linuxproc, task/none).
#
# Prints `started` when it started the daemons (stop them with stop.sh DIR), `running` when
# this folder's cluster was already up (then leave it). Exit status 3: Slurm or munge is not
# installed; 1: a daemon did not come up (its log is printed).
set -euo pipefail
dir=${1:?usage: start.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)

missing=()
for prog in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
  command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || missing+=("$prog")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Slurm/munge are not installed (missing: ${missing[*]}); install them with:" >&2
  echo "  apt-get install slurm-wlm munge" >&2
  exit 3
fi
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF="$dir/slurm.conf"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$dir/run/munged.pid" && alive "$dir/run/slurmctld.pid" && alive "$dir/run/slurmd.pid" \
  && scontrol ping 2>/dev/null | grep -q UP \
  && sinfo -h -N -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
  echo running
  exit 0
fi

# Leftovers of an earlier run of this script (killed before it could stop them).
"$here/stop.sh" "$dir" >/dev/null 2>&1 || true

rm -rf "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/munge"
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/munge"
# munged refuses a socket folder that not everyone may enter, and a key others can read.
chmod 755 "$dir" "$dir/run"
chmod 700 "$dir/munge"
mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null \
  || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge/munge.key"

cat >"$SLURM_CONF" <<CONF
# A one-node Slurm on localhost for tests/slurm.rs; written by tests/slurm/start.sh.
ClusterName=ldmtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/run/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

fail() {
  echo "$1" >&2
  for log in "$dir/munge/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
  done
  "$here/stop.sh" "$dir" >/dev/null 2>&1 || true
  exit 1
}

munged --socket="$dir/run/munge.socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/munged.seed" \
  --log-file="$dir/munge/munged.log" || fail "munged did not start"
slurmctld || fail "slurmctld did not start"
slurmd -N localhost || fail "slurmd did not start"

for _ in $(seq 1 60); do
  if sinfo -h -N -o %t 2>/dev/null | grep -q '^idle'; then
    echo started
    exit 0
  fi
  sleep 1
done
fail "the node did not become idle within 60 s: $(sinfo -N 2>&1 || true)"
