"""The DAG runner on small real stages: skip what is done, --from/--until, refusal of a foreign run root."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from pipelines import storage
from pipelines.dag import Pipeline, PipelineError, Stage, format_status, read_manifest, stage_states
from pipelines.typed_config import ConfigError, from_dict


@dataclass(frozen=True)
class CountConfig:
    words: tuple[str, ...] = ("a", "b", "a")
    repeat: int = 2


@dataclass(frozen=True)
class ToyConfig:
    text: str = "the cat sat on the mat"
    count: CountConfig = field(default_factory=CountConfig)
    runtime_note: str = "not part of the identity"


def _write(ctx, name, data: str) -> str:
    uri = storage.join(ctx.root, ctx.stage, ctx.stage_hash, name)
    storage.write_bytes_atomic(uri, data.encode())
    return uri


def toy_pipeline(calls: list[str], fail_at: str | None = None) -> Pipeline:
    def source(ctx):
        calls.append("source")
        return {"output": _write(ctx, "text.txt", ctx.config)}

    def upper(ctx):
        calls.append("upper")
        if fail_at == "upper":
            raise ValueError("boom in upper")
        text = storage.read_bytes(ctx.input("source")).decode()
        return {"output": _write(ctx, "upper.txt", text.upper())}

    def count(ctx):
        calls.append("count")
        words = storage.read_bytes(ctx.input("upper")).decode().split()
        counts = {w: words.count(w) * ctx.config.repeat for w in sorted(set(words))}
        return {"output": _write(ctx, "counts.json", json.dumps(counts))}

    def length(ctx):
        calls.append("length")
        return {"output": _write(ctx, "len.txt", str(len(storage.read_bytes(ctx.input("source")))))}

    return Pipeline([
        Stage("source", source, config=lambda c: c.text),
        Stage("upper", upper, after=("source",)),
        Stage("count", count, after=("upper",), config=lambda c: c.count),
        Stage("length", length, after=("source",)),
    ], identity=lambda c: {"text": c.text, "count": c.count})


def test_runs_everything_then_skips_everything(tmp_path):
    calls: list[str] = []
    root = str(tmp_path / "run")
    res = toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    assert calls == ["source", "upper", "count", "length"] and res.ran == calls
    counts = json.loads(storage.read_bytes(res.manifest["stages"]["count"]["outputs"]["output"]))
    assert counts == {"CAT": 2, "MAT": 2, "ON": 2, "SAT": 2, "THE": 4}
    manifest = read_manifest(root)
    assert manifest["stages"]["upper"]["inputs"] == {"source.output": manifest["stages"]["source"]["outputs"]["output"]}
    assert {s["state"] for s in manifest["stages"].values()} == {"done"}

    calls.clear()
    res = toy_pipeline(calls).run(ToyConfig(runtime_note="changed"), root, log=lambda m: None)
    assert calls == [] and res.skipped == ["source", "upper", "count", "length"]


def test_until_and_from(tmp_path):
    calls: list[str] = []
    root = str(tmp_path / "run")
    pipe = toy_pipeline(calls)
    pipe.run(ToyConfig(), root, until="upper", log=lambda m: None)
    assert calls == ["source", "upper"]
    assert stage_states(read_manifest(root), pipe.names()) == {
        "source": "done", "upper": "done", "count": "pending", "length": "pending"}

    calls.clear()
    with pytest.raises(PipelineError, match="upstream stage.*length|no such stage"):
        pipe.run(ToyConfig(), root, from_stage="nope", log=lambda m: None)
    pipe.run(ToyConfig(), root, from_stage="upper", log=lambda m: None)
    assert calls == ["upper", "count"]  # --from re-runs upper and what follows it, not length

    calls.clear()
    pipe.run(ToyConfig(), root, log=lambda m: None)
    assert calls == ["length"]


def test_from_refuses_when_upstream_not_done(tmp_path):
    pipe = toy_pipeline([])
    with pytest.raises(PipelineError, match=r"--from count: upstream stage\(s\) source, upper are not done"):
        pipe.run(ToyConfig(), str(tmp_path / "run"), from_stage="count", log=lambda m: None)


def test_failed_stage_is_recorded_and_rerun_resumes(tmp_path):
    calls: list[str] = []
    root = str(tmp_path / "run")
    with pytest.raises(PipelineError, match="stage 'upper' failed: ValueError: boom in upper"):
        toy_pipeline(calls, fail_at="upper").run(ToyConfig(), root, log=lambda m: None)
    manifest = read_manifest(root)
    assert manifest["stages"]["upper"]["state"] == "failed"
    assert "boom in upper" in manifest["stages"]["upper"]["error"]
    assert "failed" in format_status(manifest, ["source", "upper", "count"])

    calls.clear()
    toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    assert calls == ["upper", "count", "length"]
    assert read_manifest(root)["stages"]["upper"]["attempts"] == 2


def test_different_config_is_refused_and_nothing_changes(tmp_path):
    root = str(tmp_path / "run")
    toy_pipeline([]).run(ToyConfig(), root, log=lambda m: None)
    before = {f: storage.read_bytes(f) for f in storage.list_files(root)}
    other = ToyConfig(count=CountConfig(repeat=3))
    with pytest.raises(PipelineError, match=r"different config(.|\n)*count\.repeat: 2 -> 3"):
        toy_pipeline([]).run(other, root, log=lambda m: None)
    assert {f: storage.read_bytes(f) for f in storage.list_files(root)} == before


def test_non_empty_root_without_manifest_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(PipelineError, match="not empty"):
        toy_pipeline([]).run(ToyConfig(), str(tmp_path), log=lambda m: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_vanished_output_reruns_the_stage(tmp_path):
    calls: list[str] = []
    root = str(tmp_path / "run")
    res = toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    os.remove(res.manifest["stages"]["length"]["outputs"]["output"])
    calls.clear()
    toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    assert calls == ["length"]


def test_stage_order_is_checked():
    with pytest.raises(PipelineError, match="'b' runs after 'c', which is not declared before it"):
        Pipeline([Stage("a", lambda c: {}), Stage("b", lambda c: {}, after=("c",)), Stage("c", lambda c: {})])


def test_strict_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) count\.repeats"):
        from_dict(ToyConfig, {"count": {"repeats": 2}})
    with pytest.raises(ConfigError, match=r"count\.repeat: expected an integer, got str"):
        from_dict(ToyConfig, {"count": {"repeat": "two"}})


def test_s3_run_root(s3_bucket):
    calls: list[str] = []
    root = f"{s3_bucket}/runs/toy"
    toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    assert calls == ["source", "upper", "count", "length"]
    assert read_manifest(root)["stages"]["count"]["outputs"]["output"].startswith(root + "/count/")
    calls.clear()
    toy_pipeline(calls).run(ToyConfig(), root, log=lambda m: None)
    assert calls == []
    with pytest.raises(PipelineError, match="different config"):
        toy_pipeline(calls).run(ToyConfig(text="other"), root, log=lambda m: None)
