"""Trigger configuration: validated models, loaded from YAML; errors name the key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from funcx_flows.errors import ConfigError


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetConfig(Model):
    """What a trigger starts. ``parameters`` values may be templates: a value that is
    exactly ``"{paths}"`` (or ``{path}``, ``{files}``, ``{task_id}``, ``{batch_id}``,
    ``{time}``...) becomes that value; other strings are formatted with them."""

    kind: Literal["flow", "deployment", "event"] = "flow"
    flow: str = ""  # "package.module:flow" or "path/to/file.py:flow" (kind: flow)
    deployment: str = ""  # "flow-name/deployment-name" (kind: deployment)
    event: str = ""  # event name (kind: event)
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int = Field(5, ge=1)
    retry_initial_s: float = Field(1.0, ge=0)
    retry_max_s: float = Field(300.0, gt=0)
    # a run cut off by a crash: start it again? (default: yes for deployment and event,
    # whose starts are idempotent; no for in-process flows, which become "interrupted")
    rerun_interrupted: bool | None = None
    # Prefect flow-run heartbeats for in-process flows: off, because each one costs a
    # ~1 s wait at the end of every flow run (Prefect 3.8-3.9); the trigger itself finds
    # runs cut off by a crash and marks them Crashed in Prefect (see docs/triggers.md)
    prefect_heartbeats: bool = False

    @model_validator(mode="after")
    def _named(self) -> TargetConfig:
        needed = {"flow": self.flow, "deployment": self.deployment, "event": self.event}
        if not needed[self.kind]:
            raise ValueError(f"target of kind {self.kind!r} needs the key {self.kind!r}")
        return self


class FileTriggerConfig(Model):
    type: Literal["files"] = "files"
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    paths: list[str] = Field(min_length=1)
    patterns: list[str] = Field(default_factory=lambda: ["*"])
    ignore_patterns: list[str] = Field(default_factory=lambda: [".*", "*.tmp", "*.part", "*~"])
    recursive: bool = True
    # stable: size and mtime unchanged for settle_s (and close-after-write ends the wait
    # early where the OS reports it); sentinel: a "<file><sentinel_suffix>" file marks it done
    mode: Literal["stable", "sentinel"] = "stable"
    settle_s: float = Field(2.0, ge=0)
    # after close-after-write or a rename into place: 0 fires at once; raise it for
    # writers that close and reopen a file while writing it
    close_settle_s: float = Field(0.0, ge=0)
    # a full scan this often (0: only at start and after lost events) as a safety net
    rescan_interval_s: float = Field(300.0, ge=0)
    sentinel_suffix: str = ".done"
    polling: bool = False  # for network filesystems without events
    poll_interval_s: float = Field(1.0, gt=0)
    batch_size: int = Field(1, ge=1)
    batch_window_s: float = Field(0.0, ge=0)
    max_in_flight: int = Field(4, ge=1)
    target: TargetConfig


class GlobusAuthConfig(Model):
    """How the Globus trigger authenticates: a confidential client (id, and the secret
    in an environment variable) or stored user tokens (a JSON file)."""

    client_id: str = ""
    client_id_env: str = "FUNCX_FLOWS_GLOBUS_CLIENT_ID"
    client_secret_env: str = "FUNCX_FLOWS_GLOBUS_CLIENT_SECRET"
    token_file: str = ""  # {"refresh_token": ...} or {"access_token": ...}


class GlobusTriggerConfig(Model):
    type: Literal["globus"] = "globus"
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    destination_endpoint: str = ""
    path_prefix: str = ""
    label_pattern: str = ""
    endpoint_manager: bool = False  # everyone's transfers into destination_endpoint
    poll_interval_s: float = Field(30.0, gt=0)
    # each poll re-reads this much before the newest completion time seen: a task that
    # Transfer lists later than that after newer ones were listed is not seen
    overlap_s: float = Field(300.0, ge=0)
    # the start point on the first start (ISO 8601, UTC if no zone): earlier transfers
    # fire too. Unset: only transfers that complete after the first start
    since: datetime | None = None
    list_files: bool = True
    file_list_concurrency: int = Field(4, ge=1, le=64)  # file lists fetched at once
    # no complete listing for this long: logged and shown by `trigger status` as stalled
    stall_after_s: float = Field(300.0, gt=0)
    max_in_flight: int = Field(4, ge=1)
    auth: GlobusAuthConfig = Field(default_factory=GlobusAuthConfig)
    transfer_url: str = ""  # blank: Globus's; another Transfer-compatible API (tests)
    target: TargetConfig

    @model_validator(mode="after")
    def _manager_needs_endpoint(self) -> GlobusTriggerConfig:
        if self.since is not None and self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=UTC)  # Transfer's times are UTC
        if self.endpoint_manager and not self.destination_endpoint:
            raise ValueError("endpoint_manager needs destination_endpoint")
        if self.path_prefix and not self.list_files:
            raise ValueError("path_prefix needs list_files: true (the paths come from the "
                             "task's file list)")
        return self


class ReportConfig(Model):
    """Status reports to the service, for its dashboard's Triggers page
    (docs/dashboard.md): every ``every_s``, as the client's user."""

    every_s: float = Field(10.0, ge=1)
    service_url: str = ""  # blank: the client's (FUNCX_FLOWS_SERVICE_URL, <home>/service.json)
    token: str = ""  # blank: the client's (FUNCX_FLOWS_TOKEN, <home>/token)
    process: str = Field("", max_length=200)  # blank: "<host>:<config file name>"


class TriggersFile(Model):
    state_db: str = ""  # blank: <home>/triggers/state.db
    report: ReportConfig | None = None  # blank: no reports
    triggers: list[Annotated[FileTriggerConfig | GlobusTriggerConfig,
                             Field(discriminator="type")]] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TriggersFile:
        names = [t.name for t in self.triggers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"trigger names must be unique: {sorted(dup)}")
        return self


def parse(data: Any, source: str = "") -> TriggersFile:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid trigger config {source}: expected a mapping with 'triggers'")
    for i, t in enumerate(data.get("triggers") or []):
        if isinstance(t, dict) and "type" not in t:
            raise ConfigError(f"invalid trigger config {source}: triggers.{i}.type: "
                              "missing (files or globus)")
    try:
        return TriggersFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if str(p) not in ("files", "globus")]
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {'.'.join(loc) or '(top level)'}: {msg}")
        raise ConfigError(f"invalid trigger config {source}:\n" + "\n".join(lines)) from None


def load(path: Path) -> TriggersFile:
    """A triggers file; a flow given as a relative ``file.py:flow`` is the file beside
    it (the config names its own neighbours, wherever the command runs from)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no trigger config at {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    config = parse(data, str(path))
    for t in config.triggers:
        t.target.flow = flow_beside(t.target.flow, path.parent)
    return config


def flow_beside(ref: str, folder: Path) -> str:
    """``file.py:flow`` relative to ``folder``; anything else as it is."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref.endswith(".py"):
        return ref
    file = Path(module_ref).expanduser()
    return ref if file.is_absolute() else f"{(folder / file).resolve()}:{attr}"
