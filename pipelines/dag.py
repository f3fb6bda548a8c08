"""The pipeline as a DAG of named stages, with a run manifest that makes the whole run resumable.

A ``Stage`` is a name, the stages it reads from, the slice of the run config it depends on, and a
callable that turns a ``StageContext`` into a dict of output URIs. ``Pipeline.run`` walks the stages
in declaration order and, for each one, either skips it (done in the manifest, same stage hash,
outputs still there) or runs it and records the result. The manifest lives at
``{run_root}/manifest.json`` (local disk or ``s3://``) and holds, per stage: state, inputs,
outputs, stage hash, timings and the error of a failed attempt. It is rewritten atomically after
every state change, so a driver killed at any point leaves a manifest that tells the next run
exactly which stages are finished; the unfinished stage is simply run again, and the stage itself
(content-addressed output, checkpoints) decides how much of its work it can reuse.

A run root belongs to one config: running a different config against it is refused before any work
starts, naming the keys that differ. Nothing finished is ever deleted. A run root has one driver at a
time: ``run`` holds the root's lease lock (``pipelines.run_lock``) and checks it before every manifest
write, so a second driver is refused and a driver whose lock was taken over stops.

The BERT pipeline's stages are declared in ``pipelines.bert_dag.bert_pipeline``.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pipelines import console, identity, run_lock, run_root, storage
from pipelines.typed_config import config_hash, to_dict

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
STATES = ("pending", "running", "done", "failed", "interrupted")


class PipelineError(RuntimeError):
    """A run that cannot start (refused before any work); the message says why."""


class StageFailed(PipelineError):
    """A stage raised; the manifest records it as failed and a re-run retries it."""


class Interrupted(PipelineError):
    """Ctrl-C, SIGTERM or a stopped job ended a stage; the manifest records it as interrupted and the
    message says where the next run resumes."""


@dataclass
class StageContext:
    """What a stage's run function gets: its slice of the run config (the one its identity hashes),
    where to write, its upstream outputs."""

    config: Any
    root: str
    stage: str
    stage_hash: str
    inputs: dict[str, dict[str, str]]
    """Outputs of every upstream stage (transitively), by stage name."""

    def input(self, stage: str, key: str = "output") -> str:
        try:
            return self.inputs[stage][key]
        except KeyError as e:
            raise PipelineError(f"stage {self.stage!r} asked for {stage}.{key}, which is not an upstream output") from e


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, str]]
    """Does the work; returns {output name: URI}. Must be idempotent (re-running after a crash is safe)."""
    after: tuple[str, ...] = ()
    """Stages whose outputs this one reads."""
    config: Callable[[Any], Any] = lambda cfg: None
    """The slice of the run config this stage depends on: hashed into the stage hash (without its
    execution fields) and handed to ``run`` as ``ctx.config``."""
    description: str = ""
    resume_point: Callable[[str], str | None] | None = None
    """Where an unfinished run of this stage picks up, given the run root (e.g. "phase 0 step 150"), for
    the console; None: the stage starts over (its finished shards are still reused)."""


@dataclass
class StageRecord:
    state: str = "pending"
    stage_hash: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    attempts: int = 0
    error: str | None = None


@dataclass
class RunResult:
    root: str
    ran: list[str]
    skipped: list[str]
    manifest: dict[str, Any]


def manifest_uri(root: str) -> str:
    return storage.join(root, MANIFEST_NAME)


def read_manifest(root: str) -> dict[str, Any] | None:
    uri = manifest_uri(root)
    return storage.read_json(uri) if storage.exists(uri) else None


def diff_configs(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += diff_configs(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += diff_configs(a, b, f"{prefix.rstrip('.')}[{i}].")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


class Pipeline:
    """An ordered set of stages; declaration order must already be a topological order."""

    def __init__(self, stages: Iterable[Stage], identity: Callable[[Any], Any] = lambda cfg: cfg):
        self.stages = {s.name: s for s in stages}
        # identity(cfg) is what makes two configs "the same run" (runtime knobs such as the Ray
        # address are left out, so a run can move from a laptop to a cluster).
        self.identity = identity
        seen: set[str] = set()
        for s in self.stages.values():
            for dep in s.after:
                if dep not in seen:
                    raise PipelineError(f"stage {s.name!r} runs after {dep!r}, which is not declared before it")
            seen.add(s.name)

    # --- graph ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.stages)

    def upstream(self, name: str) -> list[str]:
        """All stages ``name`` depends on, transitively, in pipeline order."""
        found: set[str] = set()
        todo = list(self.stages[name].after)
        while todo:
            dep = todo.pop()
            if dep not in found:
                found.add(dep)
                todo.extend(self.stages[dep].after)
        return [n for n in self.stages if n in found]

    def downstream(self, name: str) -> list[str]:
        return [n for n in self.stages if name in self.upstream(n)]

    def _check_name(self, name: str, flag: str) -> None:
        if name not in self.stages:
            raise PipelineError(f"{flag} {name!r}: no such stage; stages are {', '.join(self.stages)}")

    def stage_hashes(self, cfg: Any) -> dict[str, str]:
        """Each stage's hash is ``pipelines.identity.output_identity`` of its name, its config slice
        and its upstream hashes."""
        hashes: dict[str, str] = {}
        for s in self.stages.values():
            hashes[s.name] = identity.output_identity(s.name, 1, s.config(cfg), [hashes[d] for d in s.after])
        return hashes

    # --- manifest ---------------------------------------------------------------------------
    def _open_manifest(self, cfg: Any, root: str) -> dict[str, Any]:
        run_identity = to_dict(self.identity(cfg))
        run_hash = config_hash(run_identity)
        manifest = read_manifest(root)
        if manifest is None:
            # the lock file of the driver now planning the run does not count
            logs = storage.join(root, run_root.LOGS_DIR) + "/"
            others = [f for f in storage.list_files(root) if not posixpath.basename(f).startswith(run_lock.LOCK_NAME)
                      and not f.startswith(logs)] if storage.is_dir(root) else []
            if others:
                raise PipelineError(f"run root {root} exists and is not empty but has no {MANIFEST_NAME}; "
                                    "refusing to write into it (choose a new run root)")
            return {"version": MANIFEST_VERSION, "config_hash": run_hash, "config": run_identity,
                    "created": time.time(), "stages": {}}
        if manifest.get("config_hash") != run_hash and not any(
                rec.get("state") == "done" for rec in manifest.get("stages", {}).values()):
            # nothing was ever finished here (e.g. a first run that failed on a bad input): the
            # corrected config takes the root over; stage outputs are keyed by their own identity
            return {"version": MANIFEST_VERSION, "config_hash": run_hash, "config": run_identity,
                    "created": time.time(), "stages": {}}
        if manifest.get("config_hash") != run_hash:
            changed = diff_configs(manifest.get("config", {}), run_identity)
            raise PipelineError(
                f"run root {root} was created by a different config (hash {manifest.get('config_hash')}, "
                f"this one is {run_hash}); nothing was changed. Differences:\n  "
                + "\n  ".join(changed[:20] or ["(unknown)"])
                + "\nUse a new run root for a different config."
            )
        return manifest

    def _save(self, root: str, manifest: dict[str, Any]) -> None:
        run_lock.check(root)  # a driver whose lock was taken over must not overwrite the new one's manifest
        manifest["updated"] = time.time()
        storage.write_json_atomic(manifest_uri(root), manifest)

    @staticmethod
    def _record(manifest: dict[str, Any], name: str) -> StageRecord:
        return StageRecord(**manifest["stages"].get(name, {}))

    def _is_done(self, manifest: dict[str, Any], name: str, stage_hash: str) -> bool:
        rec = self._record(manifest, name)
        if rec.state != "done" or rec.stage_hash != stage_hash:
            return False
        return all(storage.exists(uri) for uri in rec.outputs.values())

    # --- running ----------------------------------------------------------------------------
    def plan(self, cfg: Any, root: str, from_stage: str | None = None, until: str | None = None
             ) -> tuple[list[str], list[str], dict[str, Any]]:
        """(stages to run, stages to skip, manifest); raises before any work when the run can't go."""
        if from_stage:
            self._check_name(from_stage, "--from")
        if until:
            self._check_name(until, "--until")
        manifest = self._open_manifest(cfg, root)
        hashes = self.stage_hashes(cfg)
        selected = self.names() if not until else self.upstream(until) + [until]
        if not from_stage:
            to_skip = [n for n in selected if self._is_done(manifest, n, hashes[n])]
            return [n for n in selected if n not in to_skip], to_skip, manifest
        if from_stage not in selected:
            raise PipelineError(f"--from {from_stage} comes after --until {until}")
        # --from S re-runs S and what follows it (in the selection) and takes S's upstream as done.
        to_run = [n for n in selected if n == from_stage or n in self.downstream(from_stage)]
        needed = {u for n in to_run for u in self.upstream(n)} - set(to_run)
        missing = [n for n in self.names() if n in needed and not self._is_done(manifest, n, hashes[n])]
        if missing:
            raise PipelineError(f"--from {from_stage}: upstream stage(s) {', '.join(missing)} are not done; "
                                "run without --from first")
        to_skip = [n for n in self.names() if n in needed]
        return to_run, to_skip, manifest

    def run(self, cfg: Any, root: str, from_stage: str | None = None, until: str | None = None,
            log: Callable[[str], None] | None = None, lease_s: float | None = None,
            check: Callable[[list[str]], Any] | None = None) -> RunResult:
        """Plan, then run what is not done; holds the run root's lock throughout (LockHeld: another driver
        has it). ``check(stages to run)`` may refuse the plan before any work (e.g. a missing input).
        ``log``: as ``execute``'s."""
        with run_lock.hold(root, lease_s):
            plan = self.plan(cfg, root, from_stage, until)
            if check is not None:
                check(plan[0])
            return self.execute(cfg, root, plan, log)

    def execute(self, cfg: Any, root: str, plan: tuple[list[str], list[str], dict[str, Any]],
                log: Callable[[str], None] | None = None) -> RunResult:
        """Run the stages of ``plan`` (from ``plan``, under the run root's lock, which the caller holds).
        ``log`` gets a line per stage as it is skipped, started and finished; without it each stage is a
        live line on the console (``pipelines.console``) and then its one result line."""
        run_lock.check(root)
        lines = _Lines(log) if log else _ConsoleLines()
        to_run, to_skip, manifest = plan
        hashes = self.stage_hashes(cfg)
        if to_run:  # a run with nothing to do leaves the manifest untouched
            manifest["driver"] = {"host": socket.gethostname(), "pid": os.getpid()}
            self._save(root, manifest)
        total = len(to_run) + len(to_skip)
        for i, name in enumerate(n for n in self.stages if n in to_run or n in to_skip):
            prefix = f"[{i + 1}/{total}] {name}"
            if name in to_skip:
                lines.skipped(prefix)
                continue
            self._run_stage(cfg, root, name, hashes[name], manifest, prefix, lines)
        return RunResult(root=root, ran=to_run, skipped=to_skip, manifest=manifest)

    def _run_stage(self, cfg: Any, root: str, name: str, stage_hash: str, manifest: dict[str, Any],
                   prefix: str, log: "_Lines") -> None:
        stage = self.stages[name]
        inputs = {u: self._record(manifest, u).outputs for u in self.upstream(name)}
        rec = self._record(manifest, name)
        rec = dataclasses.replace(rec, state="running", stage_hash=stage_hash, started=time.time(),
                                  finished=None, seconds=None, error=None, attempts=rec.attempts + 1,
                                  inputs={f"{u}.{k}": v for u in stage.after for k, v in inputs[u].items()})
        manifest["stages"][name] = dataclasses.asdict(rec)
        self._save(root, manifest)
        resumed = stage.resume_point(root) if stage.resume_point and rec.attempts > 1 else None
        log.begin(name, prefix + (f" (attempt {rec.attempts}" + (f", resuming from {resumed})" if resumed else ")")
                                  if rec.attempts > 1 else ""))
        if resumed:
            log.note(f"{name}: resuming from {resumed}")
        ctx = StageContext(config=stage.config(cfg), root=root, stage=name, stage_hash=stage_hash, inputs=inputs)
        try:
            outputs = stage.run(ctx)
            if not isinstance(outputs, dict) or not all(isinstance(v, str) for v in outputs.values()):
                raise PipelineError(f"stage {name!r} returned {outputs!r}; expected a dict of output URIs")
        except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C; SIGTERM (Ray's handler exits); a stopped job
            rec.state, rec.finished = "interrupted", time.time()
            rec.seconds = rec.finished - rec.started
            rec.error = "interrupted (Ctrl-C, SIGTERM or a stopped job)"
            manifest["stages"][name] = dataclasses.asdict(rec)
            self._save(root, manifest)
            where = stage.resume_point(root) if stage.resume_point else None
            resume = f"from {where}" if where else "it (its finished work is kept)"
            log.end(name, f"{prefix}: interrupted after {rec.seconds:.1f}s")
            raise Interrupted(f"in stage {name}; run the same command again to resume {resume}") from e
        except Exception as e:
            rec.state, rec.finished = "failed", time.time()
            rec.seconds = rec.finished - rec.started
            rec.error = console.plain(f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=-6))
            manifest["stages"][name] = dataclasses.asdict(rec)
            self._save(root, manifest)
            error = console.plain(f"{type(e).__name__}: {e}")
            log.end(name, f"{prefix}: FAILED after {rec.seconds:.1f}s: {error}")
            raise StageFailed(f"stage {name!r} failed: {error}") from e
        rec.state, rec.outputs, rec.finished = "done", outputs, time.time()
        rec.seconds = rec.finished - rec.started
        manifest["stages"][name] = dataclasses.asdict(rec)
        self._save(root, manifest)
        log.end(name, f"{prefix}: done in {rec.seconds:.1f}s", outputs)


class _Lines:
    """A stage's lines to a ``log`` callable: skipped, running, done (with its outputs) or failed."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def skipped(self, prefix: str) -> None:
        self.log(f"{prefix}: done already, skipped")

    def begin(self, name: str, prefix: str) -> None:
        self.log(f"{prefix}: running")

    def note(self, line: str) -> None:
        self.log(line)

    def end(self, name: str, line: str, outputs: dict[str, str] | None = None) -> None:
        self.log(line + (f" -> {', '.join(outputs.values())}" if outputs else ""))


class _ConsoleLines(_Lines):
    """The same on the console: the running stage is its live line; its outputs are in the final summary."""

    def __init__(self):
        super().__init__(console.info)

    def begin(self, name: str, prefix: str) -> None:
        console.begin(name, prefix)

    def end(self, name: str, line: str, outputs: dict[str, str] | None = None) -> None:
        console.end(name, line)


# --- status ---------------------------------------------------------------------------------
def stage_states(manifest: dict[str, Any], names: Iterable[str] | None = None) -> dict[str, str]:
    """State per stage as shown to people: a 'running' stage whose driver died is 'interrupted'."""
    driver = manifest.get("driver", {})
    driver_dead = driver.get("host") == socket.gethostname() and not run_lock.pid_alive(int(driver.get("pid", -1)))
    names = list(names) if names is not None else list(manifest.get("stages", {}))
    out = {}
    for name in names:
        state = manifest.get("stages", {}).get(name, {}).get("state", "pending")
        out[name] = "interrupted" if state == "running" and driver_dead else state
    return out


def format_status(manifest: dict[str, Any], names: Iterable[str] | None = None) -> str:
    states = stage_states(manifest, names)
    width = max([len(n) for n in states] + [5])
    lines = [f"{'stage':<{width}}  {'state':<11}  {'seconds':>8}  outputs"]
    for name, state in states.items():
        rec = manifest.get("stages", {}).get(name, {})
        secs = f"{rec['seconds']:.1f}" if rec.get("seconds") is not None else "-"
        outs = ", ".join(rec.get("outputs", {}).values()) or (rec.get("error") or "").split("\n")[0]
        lines.append(f"{name:<{width}}  {state:<11}  {secs:>8}  {outs}")
    return "\n".join(lines)
