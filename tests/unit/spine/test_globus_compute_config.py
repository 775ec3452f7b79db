"""A Globus Compute endpoint's config.yaml read as ours: its common keys translated,
the harmless ones dropped with a note, the ones that would change the allocation
refused each with its reason; walltime as YAML reads it unquoted; and a Globus
Compute key in our flat config named with its equivalent."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml

from funcx_flows.endpoint.config import load_config, parse_config
from funcx_flows.errors import ConfigError

POLARIS_LIKE = """\
display_name: beamline analysis
heartbeat_period: 15
heartbeat_threshold: 120
amqp_port: 443
engine:
  type: GlobusComputeEngine
  max_workers_per_node: 4
  worker_debug: false
  strategy:
    type: SimpleStrategy
    max_idletime: 300
  provider:
    type: SlurmProvider
    partition: debug
    account: als
    launcher:
      type: SrunLauncher
    scheduler_options: "#SBATCH --constraint=gpu"
    worker_init: module load conda; conda activate analysis
    walltime: 1:00:00
    nodes_per_block: 2
    init_blocks: 0
    min_blocks: 0
    max_blocks: 3
"""


def test_a_globus_compute_config_is_translated(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text(POLARIS_LIKE)
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path)
    assert (cfg.provider, cfg.queue, cfg.account, cfg.launcher) == ("slurm", "debug", "als",
                                                                    "srun")
    assert cfg.walltime == "01:00:00"  # unquoted: YAML's base-60 int 3600, as seconds
    assert (cfg.nodes_per_block, cfg.init_blocks, cfg.min_blocks, cfg.max_blocks) == (2, 0, 0, 3)
    assert cfg.max_workers_per_node == 4 and cfg.idle_timeout == 300
    assert cfg.worker_init == "module load conda; conda activate analysis"
    assert cfg.scheduler_options == "#SBATCH --constraint=gpu"
    assert (cfg.heartbeat_period_s, cfg.heartbeat_threshold_s) == (15, 120)
    assert cfg.display_name == "beamline analysis"
    assert "amqp_port: ignored" in caplog.text and "engine.worker_debug" in caplog.text


def test_what_cannot_be_translated_is_listed_with_reasons():
    data = yaml.safe_load(POLARIS_LIKE)
    data["engine"]["provider"]["exclusive"] = True
    data["engine"]["available_accelerators"] = 4
    data["engine"]["provider"]["launcher"]["type"] = "WrappedLauncher"
    data["endpoint_setup"] = "module load x"
    data["colour"] = "blue"
    with pytest.raises(ConfigError) as info:
        parse_config(data, "gc.yaml")
    text = str(info.value)
    assert "engine.provider.exclusive: no equivalent: add '#SBATCH --exclusive'" in text
    assert "engine.available_accelerators: no equivalent" in text
    assert "engine.provider.launcher.type: WrappedLauncher cannot be translated" in text
    assert "endpoint_setup: no equivalent" in text
    assert "colour: not a Globus Compute key" in text
    data = yaml.safe_load(POLARIS_LIKE)
    data["engine"]["provider"]["type"] = "KubernetesProvider"
    with pytest.raises(ConfigError, match=r"engine.provider.type: KubernetesProvider cannot be "
                                          r"translated \(known: LocalProvider, SlurmProvider"):
        parse_config(data)


@pytest.mark.parametrize(("text", "walltime"), [
    ("walltime: 1:00:00", "01:00:00"),  # YAML 1.1 base 60: 3600
    ("walltime: 30:00", "00:30:00"),
    ("walltime: 5400", "01:30:00"),
    ("walltime: '1-00:00:00'", "1-00:00:00"),
])
def test_walltime_is_an_int_of_seconds_or_a_string(text, walltime):
    assert parse_config(yaml.safe_load(text)).walltime == walltime


@pytest.mark.parametrize(("data", "words"), [
    ({"walltime": 0}, "walltime must be positive"),
    ({"walltime": True}, "walltime"),
    ({"partition": "debug"}, "partition: unknown key (a Globus Compute key; here: `queue`)"),
    ({"heartbeat_period": 5}, "here: `heartbeat_period_s`"),
    ({"engine": "GlobusComputeEngine"}, "--from-globus-compute"),
    ({"exclusive": True}, "'#SBATCH --exclusive' to scheduler_options"),
])
def test_globus_compute_habits_in_our_config_name_the_equivalent(data, words):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert words in str(info.value)


def test_configure_from_globus_compute_writes_a_checked_translation(tmp_path):
    gc = tmp_path / "gc-config.yaml"
    gc.write_text(POLARIS_LIKE)
    env_home = tmp_path / "home"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from funcx_flows.endpoint.cli import main; main()", *args],
            capture_output=True, text=True, timeout=60,
            env={"FUNCX_FLOWS_HOME": str(env_home), "PATH": "/usr/bin:/bin"})

    out = cli("configure", "polaris", "--from-globus-compute", str(gc))
    assert out.returncode == 0, out.stderr
    written = env_home / "endpoints" / "polaris" / "config.yaml"
    text = written.read_text()
    assert "# amqp_port: ignored" in text
    cfg = load_config(written)
    assert (cfg.provider, cfg.queue, cfg.walltime) == ("slurm", "debug", "01:00:00")
    again = cli("configure", "polaris", "--from-globus-compute", str(gc))
    assert again.returncode == 1 and "already configured" in again.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  provider:\n    type: SlurmProvider\n    exclusive: true\n")
    refused = cli("configure", "other", "--from-globus-compute", str(bad))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "engine.type: (missing) cannot be translated" in refused.stderr
    assert "exclusive: no equivalent" in refused.stderr
    assert not (env_home / "endpoints" / "other" / "config.yaml").exists()
