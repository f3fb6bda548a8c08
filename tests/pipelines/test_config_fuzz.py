"""Configs under fuzz: random YAML documents and ``key=value`` overrides thrown at the config loader.

Whatever comes in, the loader either builds a RunConfig or raises ConfigError naming the key; never
another exception from deep inside. Documents mix the real key names of RunConfig with random ones, so
most examples reach the typed checks of the nested stage configs, not only the unknown-key check.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.presets import build_run_config, config_data, load_run_config
from pipelines.run_config import RunConfig
from pipelines.typed_config import ConfigError, apply_overrides, parse_override, to_dict

FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _field_names(cls, seen=None) -> set[str]:
    """Every field name anywhere in the RunConfig tree."""
    seen = set() if seen is None else seen
    for f in dataclasses.fields(cls):
        seen.add(f.name)
        for tp in [typing.get_type_hints(cls)[f.name], *typing.get_args(typing.get_type_hints(cls)[f.name])]:
            for t in [tp, *typing.get_args(tp)]:
                if dataclasses.is_dataclass(t) and t.__name__ not in seen:
                    seen.add(t.__name__)
                    _field_names(t, seen)
    return seen


NAMES = sorted(n for n in _field_names(RunConfig) if n[0].islower())
DEFAULT = to_dict(RunConfig())

keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["demo:corpus", "1e3", "-1", "0", "~", "[]", "{}"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
documents = st.dictionaries(keys, values, max_size=6)


def _paths(data, prefix=()):
    """Every dotted path into the default config's plain data (list items by index)."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (str(i),))


PATHS = [p for p in _paths(DEFAULT) if p]


def _set(data, path, value):
    node = data
    for k in path[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return data


def _build(call):
    """Run the loader; only a RunConfig or a ConfigError may come out."""
    try:
        return call()
    except ConfigError as e:
        assert str(e), "a ConfigError must say what is wrong"
        return e


@FUZZ
@given(documents)
def test_random_documents(doc):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "run.yaml")
        with open(path, "w") as f:
            f.write(yaml.safe_dump(doc))
        out = _build(lambda: load_run_config(path))
    assert isinstance(out, (RunConfig, ConfigError))


@FUZZ
@given(st.text(max_size=80))
def test_random_yaml_text(text):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "run.yaml")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        out = _build(lambda: load_run_config(path))
    assert isinstance(out, (RunConfig, ConfigError))


@FUZZ
@given(st.sampled_from(PATHS), values)
def test_one_field_changed_names_the_field(path, value):
    """A wrong value at a real key is refused naming that key (or accepted, when it is valid)."""
    doc = _set(to_dict(RunConfig()), path, value)
    out = _build(lambda: build_run_config(doc))
    if isinstance(out, ConfigError):
        named = [k for k in path if not k.isdigit()]
        assert any(k in str(out) for k in named), f"{out} does not name any of {path}"


override_keys = st.one_of(st.sampled_from([".".join(p) for p in PATHS]),
                          st.lists(st.one_of(keys, st.sampled_from(["0", "1", "-1"])), min_size=1, max_size=4)
                          .map(".".join), st.text(max_size=10))
overrides = st.lists(st.one_of(st.tuples(override_keys, st.text(max_size=12)).map("=".join),
                               st.text(max_size=16)), max_size=4)


@FUZZ
@given(st.sampled_from([None, "demo", "base"]), overrides)
def test_random_overrides(config, texts):
    out = _build(lambda: build_run_config(config_data(config, texts)))
    assert isinstance(out, (RunConfig, ConfigError))


@FUZZ
@given(documents, overrides)
def test_overrides_on_random_documents(doc, texts):
    out = _build(lambda: build_run_config(apply_overrides(doc, texts)))
    assert isinstance(out, (RunConfig, ConfigError))


def test_override_errors_name_the_key():
    """Cases the fuzz found, fixed: each is a ConfigError that names the key (they were a yaml
    ReaderError/ScannerError from deep inside, or list items that could not be overridden at all)."""
    cases = {
        "name=\x1f": "override 'name=\\x1f': the value of name is not valid YAML: unacceptable character #x001f",
        "data=[1": "override 'data=[1': the value of data is not valid YAML: while parsing a flow sequence",
        "a..b=1": "override 'a..b=1': key 'a..b' has an empty part",
        "name.x=1": "override 'name.x=1': 'x' does not fit here, its parent is not a mapping",
        "pretrain.phases.x=1": "override 'pretrain.phases.x=1': 'x' does not fit here, its parent has 2 items",
        "pretrain.phases.2.num_steps=1": "override 'pretrain.phases.2.num_steps=1': '2' does not fit here",
        "pretrain.phases.0.num_steps=x": "pretrain.phases[0].num_steps: expected an integer, got str 'x'",
    }
    for text, message in cases.items():
        try:
            build_run_config(apply_overrides(to_dict(RunConfig()), [text]))
        except ConfigError as e:
            assert str(e).startswith(message), f"{text}: {e}"
        else:
            raise AssertionError(f"{text} was accepted")
    # list items by index: the override the CLI's docs show works
    cfg = build_run_config(apply_overrides(to_dict(RunConfig()), ["pretrain.phases.1.num_steps=77"]))
    assert cfg.pretrain.phases[1].num_steps == 77 and cfg.pretrain.phases[0] == RunConfig().pretrain.phases[0]
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
