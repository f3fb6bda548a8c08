"""One fine-tuning task, start to end, in whichever process runs it (a Ray task of ``jobs``, or a Tune
trial of ``trials``): every learning rate of its sweep (each resumable), then its from-scratch baseline.
"""
from __future__ import annotations

import os
import tempfile

from pipelines import console, storage
from pipelines.finetune import glue
from pipelines.finetune.config import NER_TASKS, SQUAD_TASKS, FinetuneConfig, HyperParams, TaskJob, task_data_uri
from pipelines.finetune.squad.params import SquadParams
from pipelines.typed_config import to_dict


def run_task(cfg: FinetuneConfig, job: TaskJob, checkpoint_uri: str, out_uri: str) -> dict:
    """Fine-tune one task for every learning rate of its sweep (each resumable); returns the best."""
    from pipelines.finetune import multiple_choice, ner, squad, train

    data_uri = task_data_uri(cfg, job)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as cache:
        checkpoint_dir = train.local_checkpoint(checkpoint_uri, cache)
        runs = []
        data = None
        for lr in job.learning_rates or (job.hyper_params.learning_rate,):
            hp = HyperParams(**{**to_dict(job.hyper_params), "learning_rate": lr})
            lr_uri = storage.join(out_uri, f"lr_{lr:g}")
            if (done := _finished_run(lr_uri)) is not None:
                runs.append(done)
                continue
            if job.is_squad:
                params = job.squad or SquadParams(version=SQUAD_TASKS[job.name])
                runs.append(squad.finetune_squad(params, data_uri, checkpoint_dir, hp, lr_uri, cfg.on_bad_row))
            elif job.is_ner:
                params = job.ner or NER_TASKS[job.name]
                runs.append(ner.finetune_ner(job.name, params, data_uri, checkpoint_dir, hp, lr_uri, cfg.on_bad_row))
            elif job.is_multiple_choice:
                runs.append(multiple_choice.finetune_multiple_choice(job.choice_spec, data_uri, checkpoint_dir, hp,
                                                                     lr_uri, cfg.on_bad_row))
            else:
                spec = job.spec or glue.GLUE_TASKS[job.name]
                data = data or train.read_task_data(spec, data_uri, cfg.on_bad_row)
                runs.append(train.finetune_glue_task(spec, data, checkpoint_dir, hp, lr_uri))
        best = max(runs, key=lambda r: r["score"] if r["score"] is not None else float("-inf"))
        scratch = (_scratch_baseline(cfg, job, data_uri, data, checkpoint_dir, best, out_uri)
                   if job.scratch_baseline else None)
    return {"task": job.name, "status": "done", "best_learning_rate": best["hyper_params"]["learning_rate"],
            "score": best["score"], "dev": best["dev"], "seconds_per_epoch": best.get("seconds_per_epoch"),
            "sweep": {f"{r['hyper_params']['learning_rate']:g}": r["score"] for r in runs},
            "data_reports": best.get("data_reports", []), "output_uri": out_uri,
            **({"dev_detail": best["dev_detail"]} if "dev_detail" in best else {}),
            **({"scratch": scratch} if scratch is not None else {})}


def _finished_run(run_uri: str) -> dict | None:
    """A sweep point's metrics when it finished before (its ``metrics.json`` is written last), else None."""
    metrics_uri = storage.join(run_uri, "metrics.json")
    return storage.read_json(metrics_uri) if storage.exists(metrics_uri) else None


def _scratch_baseline(cfg: FinetuneConfig, job: TaskJob, data_uri: str, data, checkpoint_dir: str, best: dict,
                      out_uri: str) -> dict:
    """The best run's hyper-parameters from random init of the same shape (resumable like a sweep point)."""
    from pipelines.finetune import train

    hp = HyperParams(**best["hyper_params"])
    uri = storage.join(out_uri, "scratch", f"lr_{hp.learning_rate:g}")
    run = _finished_run(uri)
    if run is None:
        spec = job.spec or glue.GLUE_TASKS[job.name]
        data = data or train.read_task_data(spec, data_uri, cfg.on_bad_row)
        run = train.finetune_glue_task(spec, data, checkpoint_dir, hp, uri, from_scratch=True)
    return {"score": run["score"], "dev": run["dev"], "seconds_per_epoch": run.get("seconds_per_epoch"),
            "learning_rate": hp.learning_rate}


def remote_task(cfg: FinetuneConfig, job: TaskJob, checkpoint_uri: str, out_uri: str,
                 relay: console.Relay | None = None) -> dict:
    if job.num_gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task on a GPU node must not take the card
    import torch

    torch.set_num_threads(max(1, int(job.num_cpus)))
    with console.reporting_to(relay):  # the task's live line on the driver's console
        result = run_task(cfg, job, checkpoint_uri, out_uri)
    storage.write_json_atomic(storage.join(out_uri, "result.json"), result)  # the completion marker, last
    return result
