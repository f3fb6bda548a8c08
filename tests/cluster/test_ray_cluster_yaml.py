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
