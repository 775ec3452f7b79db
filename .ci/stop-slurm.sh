#!/usr/bin/env bash
# Stop the daemons started by start-slurm.sh, by pid, and wait for them to exit.
set -u
for name in slurmd slurmctld; do
    for pid in $(pgrep -x "$name"); do
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    done
done
