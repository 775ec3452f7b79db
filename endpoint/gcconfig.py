"""A Globus Compute endpoint's ``config.yaml`` read as ours.

Globus Compute nests the scheduler settings (``engine: {type: GlobusComputeEngine,
provider: {type: SlurmProvider, partition: ..., launcher: {type: SrunLauncher}}}``);
ours is flat and names a few keys otherwise (``partition`` is ``queue``). The
loader translates such a file when it meets ``engine:``, and ``funcx-endpoint
configure NAME --from-globus-compute PATH`` writes the translation out. Keys that
change nothing here are dropped with a note saying why; keys that would change
the allocation or the workers and have no equivalent refuse the file, each with
its reason, rather than be lost on a supercomputer allocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from funcx_flows.errors import ConfigError

ENGINES = ("GlobusComputeEngine", "HighThroughputEngine", "GlobusMPIEngine",
           "ProcessPoolEngine", "ThreadPoolEngine")
PROVIDERS = {
    "LocalProvider": "local", "SlurmProvider": "slurm", "PBSProProvider": "pbs",
    "TorqueProvider": "pbs", "LSFProvider": "lsf", "CobaltProvider": "cobalt",
}
LAUNCHERS = {
    "SingleNodeLauncher": "single", "SimpleLauncher": "single", "SrunLauncher": "srun",
    "MpiRunLauncher": "mpirun", "MpiExecLauncher": "mpiexec", "AprunLauncher": "aprun",
    "JsrunLauncher": "jsrun",
}
# Globus Compute key -> ours, where only the name differs (top level, engine, provider)
RENAMED = {
    "partition": "queue", "queue": "queue", "account": "account", "project": "account",
    "allocation": "account", "walltime": "walltime", "nodes_per_block": "nodes_per_block",
    "init_blocks": "init_blocks", "min_blocks": "min_blocks", "max_blocks": "max_blocks",
    "worker_init": "worker_init", "scheduler_options": "scheduler_options",
    "max_workers_per_node": "max_workers_per_node", "max_workers": "max_workers_per_node",
    "heartbeat_period": "heartbeat_period_s", "heartbeat_threshold": "heartbeat_threshold_s",
    "display_name": "display_name", "allowed_functions": "allowed_functions",
    "max_idletime": "idle_timeout",
}
# keys that change nothing in a funcx-flows endpoint, and why
IGNORED = {
    "type": "the engine's type: funcx-flows has one engine",
    "worker_debug": "worker logs are the endpoint's (funcx-endpoint start --foreground)",
    "amqp_port": "funcx-flows endpoints dial the service's ZeroMQ or HTTPS port",
    "detach_endpoint": "funcx-endpoint start detaches unless --foreground",
    "log_dir": "logs go to the endpoint's folder",
    "label": "names are the endpoint's",
    "debug": "use funcx-endpoint --debug",
    "cmd_timeout": "PSI/J's own timeouts apply",
    "move_files": "files are not staged by the provider",
    "encrypted": "managers are authenticated by manager_auth",
    "address_probe_timeout": "not needed",
    "job_status_kwargs": "not needed",
    "idle_heartbeats_soft": "blocks are released after idle_timeout seconds",
    "idle_heartbeats_hard": "blocks are released after idle_timeout seconds",
    "public": "share the endpoint with `funcx-flows` sharing instead",
    "multi_user": "one funcx-flows endpoint runs as one user",
    "strategy": "the scaling strategy is funcx-flows' own (its max_idletime is read)",
}
# keys with no equivalent that matter, and what to do instead
REFUSED = {
    "cores_per_worker": "max_workers_per_node sets the workers per node directly",
    "mem_per_worker": "set max_workers_per_node for the memory per worker you need",
    "available_accelerators": "no GPU pinning per worker yet: pin in worker_init "
                              "or the function (CUDA_VISIBLE_DEVICES)",
    "container_type": "containers are not translated: see docs/usage.md",
    "container_uri": "containers are not translated: see docs/usage.md",
    "container_cmd_options": "containers are not translated: see docs/usage.md",
    "mem_per_node": "add '#SBATCH --mem=...' (or your scheduler's) to scheduler_options",
    "cores_per_node": "add your scheduler's line to scheduler_options",
    "exclusive": "add '#SBATCH --exclusive' to scheduler_options",
    "environment": "export the variables in worker_init",
    "endpoint_setup": "run it before funcx-endpoint start, or in worker_init",
    "endpoint_teardown": "run it after funcx-endpoint stop",
    "address": "set interchange_address to the address compute nodes reach this host at",
    "high_assurance": "not supported",
    "authentication_policy": "funcx-flows endpoints are private or shared by their owner",
    "subscription_id": "not supported",
    "admins": "not supported",
    "local_compute_services": "set service_url",
    "user_config_template_path": "multi-user endpoints are not supported",
}


@dataclass
class Translation:
    """Our config keys, and what was dropped (a note per key)."""

    config: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def is_globus_compute(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("engine"), Mapping)


def _type(section: Mapping[str, Any], where: str, known: Mapping[str, str] | tuple[str, ...],
          problems: list[str]) -> str | None:
    kind = str(section.get("type", ""))
    if kind not in known:
        names = ", ".join(known)
        problems.append(f"  {where}.type: {kind or '(missing)'} cannot be translated "
                        f"(known: {names})")
        return None
    return kind


def translate(data: Mapping[str, Any], source: str = "") -> Translation:
    """Our flat config from a Globus Compute one; every key that cannot be
    translated is listed in one ConfigError."""
    out = Translation()
    problems: list[str] = []
    engine = dict(data["engine"])
    _type(engine, "engine", ENGINES, problems)
    provider = engine.pop("provider", None) or {"type": "LocalProvider"}
    strategy = engine.get("strategy")
    if isinstance(strategy, Mapping) and "max_idletime" in strategy:
        out.config["idle_timeout"] = strategy["max_idletime"]
    sections: list[tuple[str, Mapping[str, Any]]] = [
        ("", {k: v for k, v in data.items() if k != "engine"}), ("engine.", engine)]
    if not isinstance(provider, Mapping):
        problems.append("  engine.provider: expected a mapping with a type")
    else:
        kind = _type(provider, "engine.provider", PROVIDERS, problems)
        if kind:
            out.config["provider"] = PROVIDERS[kind]
        provider = dict(provider)
        launcher = provider.pop("launcher", None)
        if isinstance(launcher, Mapping):
            lkind = _type(launcher, "engine.provider.launcher", LAUNCHERS, problems)
            if lkind:
                out.config["launcher"] = LAUNCHERS[lkind]
        sections.append(("engine.provider.", provider))
    for prefix, section in sections:
        for key, value in section.items():
            where = prefix + key
            if key in RENAMED:
                out.config[RENAMED[key]] = value
            elif key in IGNORED:
                out.dropped.append(f"{where}: ignored ({IGNORED[key]})")
            elif key in REFUSED:
                problems.append(f"  {where}: no equivalent: {REFUSED[key]}")
            else:
                problems.append(f"  {where}: not a Globus Compute key funcx-flows knows")
    if problems:
        raise ConfigError(f"cannot translate the Globus Compute config {source}:\n"
                          + "\n".join(problems))
    return out


# A Globus Compute key met in our flat config: ours, or what to do instead.
EQUIVALENT = {
    **{k: f"`{v}`" for k, v in RENAMED.items() if k != v},
    "engine": "our config is flat (provider:, queue:, ... at the top); "
              "`funcx-endpoint configure NAME --from-globus-compute PATH` translates it",
    "type": "provider: local|slurm|pbs|lsf|flux|cobalt",
    **REFUSED,
}


def equivalent(key: str) -> str | None:
    """What a Globus Compute key is called here, for an unknown key's message."""
    hint = EQUIVALENT.get(key)
    return None if hint is None else f"a Globus Compute key; here: {hint}"
