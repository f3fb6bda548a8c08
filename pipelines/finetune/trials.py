"""The learning-rate grids of the fine-tuning tasks as parallel Ray Tune trials across the cluster.

    cfg = FinetuneConfig(tasks=(TaskJob("rte", learning_rates=(5e-5, 3e-5, 2e-5), num_gpus=0.25),),
                         parallel_trials=True)
    run_finetune_jobs(cfg, checkpoint_uri, output_root)      # calls run_lr_trials first

One Tune trial per (task, learning rate), each holding its task's ``num_cpus`` / ``num_gpus`` (a
fraction of a GPU puts several trials on one card), all in one grid, so trials of every task run at
once wherever the cluster has room. A trial trains one learning rate through ``run_task`` and
commits ``{task output}/lr_{lr}/metrics.json``; that file is its completion marker, so after a
restart a finished trial is read back, not trained again. Tune keeps no state we depend on (its
experiment folder is a temporary one). Afterwards the task's own Ray task finds every learning rate
done, keeps the best dev score and commits ``result.json`` as without trials.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Callable

from pipelines import storage
from pipelines.finetune.config import FinetuneConfig, TaskJob
from pipelines.finetune.runner import run_task


def trial_key(job: TaskJob, lr: float) -> str:
    return f"{job.name}@{lr:g}"


def lr_done(out_uri: str, lr: float) -> bool:
    return storage.exists(storage.join(out_uri, f"lr_{lr:g}", "metrics.json"))


def _trial(config: dict, cfg: FinetuneConfig, checkpoint_uri: str, outs: dict[str, str]) -> None:
    """One learning rate of one task (a Tune function trainable)."""
    from ray import tune

    name, lr = config["trial"].rsplit("@", 1)
    job = next(j for j in cfg.tasks if j.name == name)
    if job.num_gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU trial on a GPU node must not take the card
    import torch

    torch.set_num_threads(max(1, int(job.num_cpus)))
    result = run_task(cfg, dataclasses.replace(job, learning_rates=(float(lr),)), checkpoint_uri, outs[name])
    tune.report({"score": math.nan if result["score"] is None else result["score"]})


def run_lr_trials(cfg: FinetuneConfig, jobs: list[tuple[TaskJob, str]], checkpoint_uri: str,
                  log: Callable[[str], None]) -> dict[str, str]:
    """Train every learning rate not yet done of ``jobs`` ((job, output URI) pairs) as Tune trials.

    Returns task name -> error for the tasks of which a trial failed (their other trials are kept)."""
    from ray import tune

    outs = {job.name: out for job, out in jobs}
    todo = [trial_key(job, lr) for job, out in jobs for lr in job.learning_rates if not lr_done(out, lr)]
    for job, out in jobs:
        done = [f"{lr:g}" for lr in job.learning_rates if lr_done(out, lr)]
        if done:
            log(f"{job.name}: learning rate(s) {', '.join(done)} done already, skipped")
    if not todo:
        return {}
    by_name = {job.name: job for job, _ in jobs}

    def resources(config: dict) -> tune.PlacementGroupFactory:
        job = by_name[config["trial"].rsplit("@", 1)[0]]
        return tune.PlacementGroupFactory([{"CPU": job.num_cpus, "GPU": job.num_gpus}])

    trainable = tune.with_resources(tune.with_parameters(_trial, cfg=cfg, checkpoint_uri=checkpoint_uri, outs=outs),
                                    resources)
    log(f"learning-rate trials: {len(todo)} to run in parallel ({', '.join(todo)})")
    with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
        grid = tune.Tuner(trainable, param_space={"trial": tune.grid_search(todo)},
                          run_config=tune.RunConfig(storage_path=tmp, name="lr_trials", verbose=0,
                                                    failure_config=tune.FailureConfig(max_failures=0))).fit()
    errors: dict[str, str] = {}
    for result in grid:
        name, lr = result.config["trial"].rsplit("@", 1)
        if result.error is not None:
            errors[name] = f"learning rate {lr}: {type(result.error).__name__}: {result.error}"
            log(f"{name}: trial lr {lr} failed: {str(result.error).strip().splitlines()[-1][:300]}")
        else:
            log(f"{name}: trial lr {lr} done, score {result.metrics['score']:.4f}")
    return errors
