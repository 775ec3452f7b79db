from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from funcx_flows.endpoint.config import (
    EndpointConfig,
    default_config_text,
    load_config,
    parse_config,
    walltime_seconds,
)
from funcx_flows.errors import ConfigError


def test_the_commented_default_file_is_valid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(default_config_text())
    cfg = load_config(path)
    assert cfg.provider == "local"
    # every commented key in the template is a real field
    keys = [m.group(1) for line in default_config_text().splitlines()
            if (m := re.match(r"^#? ?([a-z_]+):", line))]
    assert len(keys) == len(EndpointConfig.model_fields)
    unknown = [k for k in keys if k not in EndpointConfig.model_fields]
    assert not unknown


@pytest.mark.parametrize(("data", "words"), [
    ({"max_worker_per_node": 2}, ["max_worker_per_node", "unknown key"]),
    ({"max_workers_per_node": 0}, ["max_workers_per_node", "greater than or equal to 1"]),
    ({"provider": "sge"}, ["provider", "local"]),
    ({"min_blocks": 3, "max_blocks": 2}, ["min_blocks must not exceed max_blocks"]),
    ({"walltime": "soon"}, ["walltime"]),
    ({"heartbeat_period_s": 5, "heartbeat_threshold_s": 2}, ["heartbeat_threshold_s"]),
    ({"max_workers_per_node": "many"}, ["max_workers_per_node", "integer"]),
])
def test_bad_values_are_named(data, words):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    for w in words:
        assert w in str(info.value)


def test_bad_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: [local\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="funcx-endpoint configure"):
        load_config(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_walltime_forms():
    assert walltime_seconds("00:30:00") == 1800
    assert walltime_seconds("1-02:00:00") == 93600
    assert walltime_seconds("45:00") == 2700
    assert walltime_seconds("90") == 90


@given(st.dictionaries(st.text(min_size=1, max_size=12),
                       st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans()),
                       max_size=4))
def test_any_mapping_is_either_a_config_or_a_config_error(data):
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        assert "invalid endpoint config" in str(exc)
    else:
        assert cfg.min_blocks <= cfg.max_blocks
        yaml.safe_dump(cfg.model_dump())
