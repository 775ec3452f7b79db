#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine (Debian's slurmctld + slurmd, munge),
# as measured in shared/notes/slurm.md. Idempotent; needs root; no systemd.
set -euo pipefail
base=/var/tmp/funcx-slurm
mkdir -p "$base"/{state,spool,log,run}

if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
    runuser -u munge -- munged --force
fi

hw=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/UpTime=.*//')
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost Features=ci $hw
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd -N localhost

for i in $(seq 1 150); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mixed|allocated) echo "slurm ready ($state)"; exit 0 ;;
        down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
echo "slurm did not become ready; last state: ${state:-none}" >&2
tail -20 "$base/log/slurmctld.log" "$base/log/slurmd.log" >&2 || true
exit 1
