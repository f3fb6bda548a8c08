"""Run every fine-tuning task in parallel, one Ray task each, and gather a results table.

    from pipelines.finetune.jobs import FinetuneConfig, run_finetune_jobs
    cfg = typed_config.load(FinetuneConfig, "finetune.yaml")
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
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal

from pipelines import console, storage
from pipelines.finetune import glue, metrics
from pipelines.finetune.conll import ConllParams
from pipelines.finetune.multiple_choice.spec import MC_TASKS, ChoiceSpec
from pipelines.finetune.squad import SquadParams
from pipelines.finetune.train import HyperParams
from pipelines.report import results_markdown
from pipelines.typed_config import config_hash, to_dict

SQUAD_TASKS = {"squad_v1": "v1.1", "squad_v2": "v2.0"}
NER_TASKS = {"conll2003": ConllParams()}
"""Token-classification tasks by name; any other name with ``ner`` set is one too."""


@dataclass(frozen=True)
class TaskJob:
    """One task to fine-tune: which data, which hyper-parameters, which resources."""

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("num_cpus", "num_gpus")
    """Resources: not part of any identity (``pipelines.identity.identity_data``)."""

    name: str
    """A GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad_v1, squad_v2, conll2003 (NER),
    swag, commonsenseqa, copa (multiple choice), or a custom name together with ``spec`` (GLUE format),
    ``ner`` (CoNLL format) or ``multiple_choice``."""
    data_uri: str = ""
    """Folder of the task's files; default ``{glue_root}/{GLUE dir}``, ``squad_root``, ``conll_root`` or
    ``{name}_root`` (swag, commonsenseqa, copa)."""
    spec: glue.TaskSpec | None = None
    """Reading/scoring rules of a custom GLUE-format task (the GLUE tasks have theirs built in)."""
    hyper_params: HyperParams = field(default_factory=HyperParams)
    learning_rates: tuple[float, ...] = ()
    """Optional sweep (e.g. the paper's 5e-5, 4e-5, 3e-5, 2e-5); the best dev score is kept.
    Empty: ``hyper_params.learning_rate`` only."""
    squad: SquadParams | None = None
    """SQuAD windowing/decoding; defaults follow the task name when it is squad_v1/squad_v2."""
    ner: ConllParams | None = None
    """Token classification on CoNLL-format files (scheme, entity types, file names); conll2003 defaults to IOB2."""
    multiple_choice: ChoiceSpec | None = None
    """Multiple choice (``pipelines.finetune.multiple_choice``): how a custom task's files read; swag,
    commonsenseqa and copa have theirs built in."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    """Fraction of a GPU (e.g. 0.25 puts four tasks on one card)."""
    scratch_baseline: bool = False
    """Also fine-tune the same shape from random init, with the best learning rate's hyper-parameters
    (GLUE-format tasks): the results table's from-scratch row, which shows what pretraining bought."""

    def __post_init__(self) -> None:
        if self.scratch_baseline and (self.is_squad or self.is_ner or self.is_multiple_choice):
            raise ValueError(f"task {self.name!r}: scratch_baseline is for GLUE-format tasks, not SQuAD, NER or "
                             f"multiple choice")
        if (self.spec is None and self.ner is None and self.multiple_choice is None and self.name not in glue.GLUE_TASKS
                and self.name not in SQUAD_TASKS and self.name not in NER_TASKS and self.name not in MC_TASKS):
            raise ValueError(f"task {self.name!r} is neither a GLUE task ({', '.join(glue.GLUE_TASKS)}), "
                             f"squad_v1/squad_v2, conll2003, {'/'.join(MC_TASKS)}, nor a custom task with a spec, "
                             f"ner or multiple_choice")
        if sum((self.spec is not None, self.squad is not None, self.ner is not None,
                self.multiple_choice is not None)) > 1:
            raise ValueError(f"task {self.name!r}: set at most one of spec, squad, ner and multiple_choice")
        for given in (self.spec, self.multiple_choice):
            if given is not None and given.name != self.name:
                raise ValueError(f"task {self.name!r}: the spec's name is {given.name!r}")

    @property
    def is_squad(self) -> bool:
        return self.name in SQUAD_TASKS or self.squad is not None

    @property
    def is_ner(self) -> bool:
        return self.name in NER_TASKS or self.ner is not None

    @property
    def is_multiple_choice(self) -> bool:
        return self.name in MC_TASKS or self.multiple_choice is not None

    @property
    def choice_spec(self) -> ChoiceSpec:
        return self.multiple_choice or MC_TASKS[self.name]


@dataclass(frozen=True)
class FinetuneConfig:
    """All fine-tuning tasks of a run."""

    tasks: tuple[TaskJob, ...] = ()
    glue_root: str = ""
    """Folder holding the official GLUE task folders (CoLA/, SST-2/, MNLI/ ...)."""
    squad_root: str = ""
    """Folder holding train-v1.1.json, dev-v1.1.json, train-v2.0.json, dev-v2.0.json."""
    conll_root: str = ""
    """Folder holding the CoNLL files of the NER tasks (e.g. ``conll2003/iob2`` with train.txt, valid.txt)."""
    swag_root: str = ""
    """Folder holding SWAG's official train.csv and val.csv."""
    commonsenseqa_root: str = ""
    """Folder holding CommonsenseQA's train_rand_split.jsonl and dev_rand_split.jsonl."""
    copa_root: str = ""
    """Folder holding SuperGLUE COPA's train.jsonl and val.jsonl."""
    on_bad_row: Literal["count", "raise"] = "count"
    """Malformed input rows: skip and count them in the results, or fail the task naming file and line."""
    parallel_trials: bool = False
    """Run the learning rates of every task's sweep as parallel Ray Tune trials (``pipelines.finetune.trials``),
    each with its task's resources, instead of one after another inside the task."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"FinetuneConfig.tasks names must be unique, got {names}")


def task_data_uri(cfg: FinetuneConfig, job: TaskJob) -> str:
    if job.data_uri:
        return job.data_uri
    if job.is_squad:
        if not cfg.squad_root:
            raise ValueError(f"task {job.name}: set data_uri or squad_root")
        return cfg.squad_root
    if job.is_ner:
        if not cfg.conll_root:
            raise ValueError(f"task {job.name}: set data_uri or conll_root")
        return cfg.conll_root
    if job.is_multiple_choice:
        root = getattr(cfg, f"{job.name}_root") if job.name in MC_TASKS else ""
        if not root:
            raise ValueError(f"task {job.name}: set data_uri" + (f" or {job.name}_root" if job.name in MC_TASKS else ""))
        return root
    if not cfg.glue_root:
        raise ValueError(f"task {job.name}: set data_uri or glue_root")
    return glue.task_uri(cfg.glue_root, job.spec or glue.GLUE_TASKS[job.name], "")


def task_output_uri(output_root: str, job: TaskJob, checkpoint_uri: str) -> str:
    # Without multiple_choice the identity is what it was before that field existed: finished tasks are found.
    identity = {k: v for k, v in to_dict(job).items() if not (k == "multiple_choice" and v is None)}
    return storage.join(output_root, job.name, config_hash(identity, checkpoint_uri))


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


def _remote_task(cfg: FinetuneConfig, job: TaskJob, checkpoint_uri: str, out_uri: str,
                 relay: console.Relay | None = None) -> dict:
    if job.num_gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task on a GPU node must not take the card
    import torch

    torch.set_num_threads(max(1, int(job.num_cpus)))
    with console.reporting_to(relay):  # the task's live line on the driver's console
        result = run_task(cfg, job, checkpoint_uri, out_uri)
    storage.write_json_atomic(storage.join(out_uri, "result.json"), result)  # the completion marker, last
    return result


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
    storage.write_bytes_atomic(storage.join(output_root, "results.md"), results_markdown(summary).encode("utf-8"))
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
        if r["status"] != "failed":
            _log_epochs(job.name, r, log)
        finished(job.name, f"failed: {r['error'].strip().splitlines()[-1][:300]} (see {out_uri}/error.txt)"
                 if r["status"] == "failed" else f"done, score {_score_text(r)} in {r['wall_seconds']:.0f} s")


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
    remote = ray.remote(max_retries=0)(_remote_task)
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


def _log_epochs(name: str, result: dict, log: Callable[[str], None]) -> None:
    """The best run's epochs, from its committed metrics: the tasks' own live lines reach the driver only
    through Ray's log forwarding, which may drop the last ones when the driver exits soon after."""
    uri = storage.join(result["output_uri"], f"lr_{result['best_learning_rate']:g}", "metrics.json")
    epochs = storage.read_json(uri).get("epochs", []) if storage.exists(uri) else []
    for e in epochs:
        log(f"{name}: epoch {e['epoch']}/{len(epochs)} done: train loss {e['train_loss']:.4f}, "
            f"{e['epoch_seconds']:.1f} s")


def _score_text(result: dict) -> str:
    return "n/a" if result.get("score") is None else f"{result['score']:.4f}"


def summarize(results: dict[str, dict], cfg: FinetuneConfig) -> dict:
    """The run's summary. Every score is on dev sets (the GLUE test labels are private), so both GLUE
    averages are dev averages: ``glue_score`` the leaderboard's all-task macro-average over the GLUE tasks
    present (WNLI included), ``glue_paper_average`` the BERT paper's Table 1 Average (WNLI left out)."""
    ok = {name: r for name, r in results.items() if r.get("status") != "failed" and r.get("score") is not None}
    glue_scores = {name: r["score"] for name, r in ok.items() if name in glue.GLUE_TASKS}
    paper, paper_evals = metrics.paper_glue_average({name: r["dev"] for name, r in ok.items()
                                                     if name in glue.GLUE_TASKS})
    return {"tasks": results, "glue_tasks": sorted(glue_scores),
            "glue_score": metrics.glue_score(glue_scores) if glue_scores else None,
            "glue_paper_average": paper, "glue_paper_evals": paper_evals, "split": "dev",
            "num_failed": sum(r.get("status") == "failed" for r in results.values())}


def demo_config(num_cpus: float = 1.0, num_gpus: float = 0.0, **hyper_params) -> FinetuneConfig:
    """The offline demo: one custom task on the shipped real labelled data (``pipelines/demo/task``).

    ``hyper_params`` override ``HyperParams`` fields, e.g. ``demo_config(num_epochs=1, max_train_examples=800)``.
    """
    return FinetuneConfig(tasks=(TaskJob(name=glue.DEMO_TASK.name, data_uri=glue.DEMO_TASK_DIR, spec=glue.DEMO_TASK,
                                         hyper_params=HyperParams(**hyper_params), num_cpus=num_cpus,
                                         num_gpus=num_gpus),))
