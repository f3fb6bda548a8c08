"""Run every fine-tuning task in parallel, one Ray task each, and gather a results table.

    from pipelines.finetune.jobs import FinetuneConfig, run_finetune_jobs
    cfg = typed_config.from_dict(FinetuneConfig, yaml.safe_load(open("finetune.yaml")))
    results = run_finetune_jobs(cfg, "s3://bucket/run/export", "s3://bucket/run/finetune")

Each task runs as its own Ray task with its own resources (``num_cpus``, ``num_gpus`` may be a
fraction of a GPU), all launched at once. Under ``{output_root}/{task}/{hash}/`` (the hash covers
the task's config and the checkpoint URI) each learning rate of the optional sweep writes
``lr_{lr}/metrics.json`` and predictions; ``result.json``, written last, is the task's completion
marker: a re-run loads it and skips the task. A task that raises is reported as failed (error
kept in ``error.txt``) and the others carry on. ``results.json`` and ``results.md`` under
``output_root`` hold every metric of every task (entity P/R/F1 for NER, SQuAD v2.0 at its tuned
null threshold and at 0) and, over the GLUE tasks present, the leaderboard-style GLUE score and the
BERT paper's average (WNLI excluded), both on dev.
"""
from __future__ import annotations

import contextlib
import time
import traceback
from typing import Callable

from pipelines import console, storage
from pipelines.finetune.config import FinetuneConfig, TaskJob, task_output_uri
from pipelines.finetune.runner import remote_task
from pipelines.finetune.results import summarize, task_table

def run_finetune_jobs(cfg: FinetuneConfig, checkpoint_uri: str, output_root: str,
                      log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune every task of ``cfg`` from the HF-layout checkpoint at ``checkpoint_uri``, in parallel.

    Returns ``{"tasks": {name: result}, "glue_score": float | None, "glue_tasks": [...]}``, also
    written to ``{output_root}/results.json`` and ``results.md``. A result's ``status`` is ``done``,
    ``skipped`` (finished by an earlier run) or ``failed`` (with ``error``). Uses the current Ray
    cluster (``ray.init()`` is called if none is connected and some task is left to run). ``log``
    gets one line per task as it is skipped, started and finished (and its epochs); without it, each
    task is a live line on the console (``pipelines.console``) and then its result line.
    """
    finished = (lambda name, text: log(f"{name}: {text}")) if log else \
        (lambda name, text: console.result(f"finetune {name}", text))
    log = log or (lambda message: None)
    results: dict[str, dict] = {}
    to_run = []
    for job in cfg.tasks:
        out_uri = task_output_uri(output_root, job, checkpoint_uri)
        marker = storage.join(out_uri, "result.json")
        if storage.exists(marker):
            results[job.name] = {**storage.read_json(marker), "status": "skipped"}
            finished(job.name, f"done already, skipped (score {_score_text(results[job.name])}, {out_uri})")
        else:
            to_run.append((job, out_uri))
    if cfg.parallel_trials and any(len(job.learning_rates) > 1 for job, _ in to_run):
        to_run = _run_trials_first(cfg, to_run, checkpoint_uri, results, log)
    if to_run:
        _init_ray()
    with console.Relay() if to_run else contextlib.nullcontext() as relay:
        pending = _launch(cfg, to_run, checkpoint_uri, log, relay) if to_run else {}
        _wait_all(pending, results, log, finished)
    summary = summarize({job.name: results[job.name] for job in cfg.tasks}, cfg)
    storage.write_json_atomic(storage.join(output_root, "results.json"), summary)
    storage.write_bytes_atomic(storage.join(output_root, "results.md"), ("\n".join(task_table(summary)) + "\n").encode("utf-8"))
    return summary


def _wait_all(pending: dict, results: dict[str, dict], log: Callable[[str], None],
              finished: Callable[[str, str], None]) -> None:
    """Each task's result as it ends; one task's failure is recorded, never fatal to the others."""
    import ray

    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job, out_uri, started = pending.pop(done[0])
        try:
            results[job.name] = ray.get(done[0])
        except Exception as e:  # one task's failure is reported, never fatal to the others
            error = f"{type(e).__name__}: {e}"
            storage.write_bytes_atomic(storage.join(out_uri, "error.txt"),
                                       "".join(traceback.format_exception(e)).encode("utf-8"))
            results[job.name] = {"task": job.name, "status": "failed", "error": error[-2000:], "output_uri": out_uri}
        results[job.name]["wall_seconds"] = round(time.time() - started, 1)
        r = results[job.name]
        scratch = f" (from scratch {_score_text(r['scratch'])})" if "scratch" in r else ""
        finished(job.name, f"failed: {r['error'].strip().splitlines()[-1][:300]} (see {out_uri}/error.txt)"
                 if r["status"] == "failed" else f"done, score {_score_text(r)}{scratch} in {r['wall_seconds']:.0f} s")


def _run_trials_first(cfg: FinetuneConfig, to_run: list[tuple[TaskJob, str]], checkpoint_uri: str,
                      results: dict[str, dict], log: Callable[[str], None]) -> list[tuple[TaskJob, str]]:
    """Every sweep's learning rates as parallel Tune trials; a task with a failed trial is reported
    failed (its finished trials kept), the others go on to pick their best in their own task."""
    import ray

    from pipelines.finetune.trials import run_lr_trials

    if not ray.is_initialized():
        ray.init()
    errors = run_lr_trials(cfg, [(j, o) for j, o in to_run if len(j.learning_rates) > 1], checkpoint_uri, log)
    for job, out_uri in to_run:
        if job.name in errors:
            storage.write_bytes_atomic(storage.join(out_uri, "error.txt"), errors[job.name].encode("utf-8"))
            results[job.name] = {"task": job.name, "status": "failed", "error": errors[job.name][-2000:],
                                 "output_uri": out_uri, "wall_seconds": None}
    return [(j, o) for j, o in to_run if j.name not in errors]


def _launch(cfg: FinetuneConfig, to_run: list[tuple[TaskJob, str]], checkpoint_uri: str,
            log: Callable[[str], None], relay: console.Relay | None = None) -> dict:
    """One Ray task per job, all at once; returns ref -> (job, output URI, start time)."""
    import ray

    _init_ray()
    remote = ray.remote(max_retries=0)(remote_task)
    pending = {}
    for job, out_uri in to_run:
        ref = remote.options(num_cpus=job.num_cpus, num_gpus=job.num_gpus, name=f"finetune:{job.name}").remote(
            cfg, job, checkpoint_uri, out_uri, relay)
        pending[ref] = (job, out_uri, time.time())
        log(f"{job.name}: started ({job.num_cpus:g} CPU, {job.num_gpus:g} GPU) -> {out_uri}")
    return pending


def _init_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()


def _score_text(result: dict) -> str:
    return "n/a" if result.get("score") is None else f"{result['score']:.4f}"


