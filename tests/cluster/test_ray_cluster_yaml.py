"""ray_cluster.yaml passes Ray's own autoscaler validation and documents every key."""
from __future__ import annotations

import copy
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(ROOT, "ray_cluster.yaml")


def _load() -> dict:
    with open(PATH) as f:
        return yaml.safe_load(f)


def test_validates_with_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_load())
    validate_config(config)
    types = config["available_node_types"]
    assert config["head_node_type"] == "ray.head.default"
    assert types["ray.head.default"]["resources"] == {"CPU": 0}
    assert types["cpu_worker"]["min_workers"] == 0 and types["cpu_worker"]["max_workers"] > 1
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["resources"]["GPU"] >= 1
    assert any("pip install" in c and "bert-pipeline" in c for c in config["setup_commands"])


def test_schema_rejects_a_typo():
    """The check above is not vacuous: Ray's schema refuses an unknown key."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(_load())
    bad["available_node_types"]["cpu_worker"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(bad))


def test_every_key_has_a_comment():
    lines = open(PATH).read().splitlines()
    key = re.compile(r"^\s*(- )?[\"\w.~/-]+\"?:(\s|$)")
    undocumented = []
    for i, line in enumerate(lines):
        if not key.match(line) or "#" in line:
            continue
        prev = next((p for p in reversed(lines[:i]) if p.strip()), "")
        if not prev.strip().startswith("#"):
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


def test_dashboard_and_jobs_api_bind_to_loopback_only():
    """Whoever reaches the Jobs API can run code on the cluster: it listens on the head's loopback and is
    reached through `ray dashboard ray_cluster.yaml` (an SSH tunnel to http://127.0.0.1:8265)."""
    from cluster.jobs import DEFAULT_ADDRESS

    config = _load()
    head_start = " ".join(config["head_start_ray_commands"])
    everything = " ".join(str(c) for key, cmds in config.items() if key.endswith("_commands") for c in cmds)
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head_start)
    assert hosts == ["127.0.0.1"]
    assert re.findall(r"--dashboard-port[= ](\d+)", head_start) == ["8265"]
    assert "0.0.0.0" not in everything and "--dashboard-host=0" not in everything
    assert "0.0.0.0" not in open(PATH).read()
    assert DEFAULT_ADDRESS == "http://127.0.0.1:8265"  # where `ray dashboard` forwards the port
