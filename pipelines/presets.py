"""Loading a run config: a preset name or a YAML file, then ``key=value`` overrides, built strictly.

    cfg = load_run_config("demo")                                  # a preset name
    cfg = load_run_config("my.yaml", ["pretrain.phases.0.num_steps=50", "root=s3://b/runs/x"])

Presets live in ``pipelines/presets/{demo,base,large}.yaml``. A config file may start from a preset
with ``preset: NAME`` and override any key. The schema is ``pipelines.run_config.RunConfig``.
"""
from __future__ import annotations

import os
from typing import Any

from pipelines import storage
from pipelines.run_config import RunConfig
from pipelines.typed_config import ConfigError, apply_overrides, from_dict, load_yaml_text, merge

PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
PRESETS = ("demo", "base", "base-mlm", "large")


# --- loading ------------------------------------------------------------------------------------
def preset_data(name: str) -> dict[str, Any]:
    path = os.path.join(PRESETS_DIR, f"{name}.yaml")
    if not os.path.exists(path):
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    with open(path) as f:
        return _expand_preset(load_yaml_text(f.read(), path), path)


def _expand_preset(data: dict[str, Any], source: str) -> dict[str, Any]:
    base = data.pop("preset", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{source}: preset must be a preset name, got {base!r}")
    return merge(preset_data(base), data)


def config_data(config: str | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Plain data of a config: a preset name or a YAML file (that may name a preset), then overrides."""
    if config is None:
        data: dict[str, Any] = {}
    elif config in PRESETS:
        data = preset_data(config)
    else:
        try:
            text = storage.read_bytes(config).decode("utf-8")
        except FileNotFoundError as e:
            raise ConfigError(f"config {config!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file") from e
        data = _expand_preset(load_yaml_text(text, config), config)
    return apply_overrides(data, overrides)


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Strict: an unknown key or a wrong type raises ConfigError naming it; stage configs' own
    checks (ValueError) are reported as ConfigError too."""
    try:
        return from_dict(RunConfig, data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e


def load_run_config(config: str | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return build_run_config(config_data(config, overrides))
