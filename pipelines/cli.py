"""``bert-pipeline``: run the BERT pipeline's DAG locally or as a Ray job on a cluster.

    bert-pipeline                                   # the embedded demo (= run demo): local Ray, tiny BERT
    bert-pipeline run CONFIG [--from S] [--until S] [--verbose] [key=value ...]
                                                    # CONFIG: demo | base | large | a YAML file
    bert-pipeline finetune CHECKPOINT [CONFIG] [key=value ...]
                                                    # fine-tune + evaluate any HF-layout BERT on CONFIG's tasks
    bert-pipeline status RUN_ROOT                   # what is done, running, failed
    bert-pipeline submit [--address http://127.0.0.1:8265] CONFIG [--from S] [--until S] [key=value ...]
                                                    # with `ray dashboard ray_cluster.yaml` forwarding the port
    bert-pipeline submit [--address URL] --finetune CHECKPOINT [CONFIG] [key=value ...]
    bert-pipeline logs [--address URL] [--follow] JOB
    bert-pipeline stop [--address URL] JOB

The console shows one live line per stage and its result line, then a summary; Ray's own logs and
warnings go to ``{root}/logs/{command}-{time}.log``, named in the first line (``--verbose``: shown here).

Exit status: 0 success, 1 a stage or job failed, 2 a bad config, argument or address (nothing run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Sequence

from pipelines.typed_config import ConfigError

if TYPE_CHECKING:
    from pipelines.run_root import RunLog


class UsageError(Exception):
    """Reported as one line and exit status 2: nothing has been run."""


class RayStartError(Exception):
    """Ray could not be started or reached; reported as one line (exit status 1), its details in the log."""


def _stages_text() -> str:
    from pipelines.bert_dag import bert_pipeline
    from pipelines.presets import PRESETS

    stages = bert_pipeline().stages.values()
    return ("presets: " + ", ".join(PRESETS) + " (pipelines/presets/*.yaml), or your own YAML file "
            "(`preset: demo` to start from one)\n\nstages, in order:\n"
            + "\n".join(f"  {s.name:<10} {s.description}" for s in stages))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bert-pipeline", description="BERT pretraining pipeline: raw text -> GLUE table.",
        epilog="A bare `bert-pipeline` runs the embedded demo (= `bert-pipeline run demo`): the shipped corpus and "
               "task, a tiny BERT on a local Ray, about 4 minutes on a 2-core CPU, into ./runs/demo. Run it again "
               "and every finished stage is skipped.")
    sub = p.add_subparsers(dest="command")
    raw = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser("run", help="run what is not done yet, skip what is", epilog=_stages_text(), formatter_class=raw)
    submit = sub.add_parser("submit", help="run as a Ray job on a cluster and follow its logs", epilog=_stages_text(),
                            formatter_class=raw)
    for sp in (run, submit):
        sp.add_argument("config", nargs="?", default=None, help="preset (demo, base, base-mlm, large) or YAML file")
        sp.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. pretrain.phases.0.num_steps=50")
        sp.add_argument("--from", dest="from_stage", help="re-run from this stage (its upstream must be done)")
        sp.add_argument("--until", help="stop after this stage")
        sp.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and warnings here instead of in the run's log file")
    run.add_argument("--config-json", help=argparse.SUPPRESS)  # the resolved config, as sent by `submit`
    submit.add_argument("--address", help="Ray dashboard URL (default: $RAY_ADDRESS, else http://127.0.0.1:8265, "
                        "where `ray dashboard ray_cluster.yaml` forwards the head's loopback-only dashboard)")
    submit.add_argument("--no-follow", action="store_true", help="print the job id and return")
    submit.add_argument("--finetune", metavar="CHECKPOINT", help="submit `finetune CHECKPOINT` instead of the DAG")
    finetune = sub.add_parser("finetune", help="fine-tune and evaluate a checkpoint on the config's tasks")
    finetune.add_argument("checkpoint", help="HF-layout BERT folder (local or s3://): config.json, weights, vocab")
    finetune.add_argument("config", nargs="?", default=None, help="preset (demo, base, base-mlm, large) or YAML file")
    finetune.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. root=runs/eval")
    finetune.add_argument("--config-json", help=argparse.SUPPRESS)  # the resolved config, as sent by `submit`
    finetune.add_argument("--verbose", action="store_true",
                          help="show Ray's own logs and warnings here instead of in the run's log file")
    status = sub.add_parser("status", help="show a run's stages")
    status.add_argument("run", help="run root (local path or s3://), or a preset or YAML file whose root to show "
                        "(an existing folder of that name wins)")
    address_help = "Ray dashboard URL (default: $RAY_ADDRESS, else http://127.0.0.1:8265)"
    logs = sub.add_parser("logs", help="print a job's logs")
    logs.add_argument("job", help="the job id `submit` printed (raysubmit_...)")
    logs.add_argument("--address", help=address_help)
    logs.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    stop = sub.add_parser("stop", help="stop a job (its run resumes when submitted again)")
    stop.add_argument("job", help="the job id `submit` printed (raysubmit_...)")
    stop.add_argument("--address", help=address_help)
    return p


def _split_config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """argparse puts a leading ``k=v`` into ``config``; a CONFIG never contains '=' so move it back."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:
        config, overrides = None, [config] + overrides
    return config, overrides


def load_config(args: argparse.Namespace):
    from pipelines.presets import build_run_config, config_data, load_run_config

    if getattr(args, "config_json", None):
        return build_run_config(json.loads(args.config_json))
    config, overrides = _split_config_and_overrides(args)
    if config is None:
        config = "demo"
    return build_run_config(config_data(config, overrides)) if overrides else load_run_config(config)


# --- run ------------------------------------------------------------------------------------------
def init_ray(cfg) -> bool:
    """Connect to (or start) Ray unless this process already is; True when this call did it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        return _init_ray(cfg)
    except Exception as e:  # a raylet that did not start in time (an overloaded machine), a wrong address
        from pipelines.console import plain

        where = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        first = plain(str(e)).strip().splitlines()[0] if str(e).strip() else ""
        raise RayStartError(f"could not start or reach {where}: {type(e).__name__}: {first}") from e


def _init_ray(cfg) -> bool:
    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address)
        return True
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # workers inherit it: DeepSpeed on CPU (gloo)
    # Workers inherit this process's environment (credentials included) through the raylet started
    # here; the runtime_env, which the dashboard shows, carries non-secret settings only.
    env = {k: os.environ[k] for k in ("DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "AWS_ENDPOINT_URL") if k in os.environ}
    # address="local": a new Ray of our own, never another `ray start` cluster found on this machine
    from cluster.ray_settings import system_config, use_node_env

    use_node_env()  # the raylet started here, and its workers, inherit it
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, runtime_env={"env_vars": env},
             _system_config=system_config())
    return True


@contextlib.contextmanager
def ray_for(cfg, needed: bool, log: "RunLog | None"):
    """Ray (when ``needed``) with its output in ``log``, until a Ray this command started has shut down:
    its log forwarding goes on printing until then."""
    import ray

    with log.capture() if log else contextlib.nullcontext():
        started = init_ray(cfg) if needed else False
        try:
            yield
        finally:
            if started and log:
                ray.shutdown()


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines import run_lock
    from pipelines.run_root import check_run_root

    cfg = load_config(args)
    check_run_root(cfg.root)
    try:  # one driver per run root, taken once, before planning, starting Ray or writing anything
        with run_lock.hold(cfg.root, cfg.lock.lease_s):
            return _run_locked(args, cfg)
    except run_lock.LockHeld as e:
        raise UsageError(str(e)) from e
    except run_lock.LockLost as e:
        print(f"bert-pipeline run: {e}", file=sys.stderr)
        return 1


def _run_locked(args: argparse.Namespace, cfg) -> int:
    from pipelines import console
    from pipelines.bert_dag import bert_pipeline, checked_plan
    from pipelines.dag import read_manifest
    from pipelines.run_root import RunLog

    pipeline = bert_pipeline()
    plan = checked_plan(pipeline, cfg, args.from_stage, args.until)  # the one plan, refused before any work
    to_run, to_skip, _ = plan
    log = RunLog(cfg.root) if to_run and not args.verbose else None
    console.info(f"run {cfg.name} at {cfg.root}: {len(to_run)} stage(s) to run ({', '.join(to_run) or 'none'}), "
                 f"{len(to_skip)} done" + (f"; Ray's logs: {log.shown}" if log else ""))
    t0 = time.time()
    try:
        with ray_for(cfg, bool(to_run), log):
            pipeline.execute(cfg, cfg.root, plan)
    finally:
        console.clear()
        if log:
            log.publish()
        manifest = read_manifest(cfg.root)
        if manifest:
            console.info(run_summary(cfg.root, manifest, [n for n in pipeline.names() if n in to_run + to_skip],
                                     time.time() - t0, log))
    return 0


def run_summary(root: str, manifest: dict, names: list[str], seconds: float, log: "RunLog | None") -> str:
    """The run's last lines: every stage with its outputs, the results table, where the rest is."""
    from pipelines import storage
    from pipelines.dag import format_status, manifest_uri

    lines = ["", f"finished in {seconds:.0f}s", format_status(manifest, names)]
    report = manifest["stages"].get("report", {})
    if report.get("state") == "done":
        lines += ["", storage.read_bytes(report["outputs"]["output"]).decode("utf-8").rstrip(),
                  "", f"results table: {report['outputs']['output']}", f"loss curves: {report['outputs']['plot']}"]
    lines.append(f"manifest: {manifest_uri(root)} (bert-pipeline status {root})")
    if log:
        lines.append(f"Ray's logs: {log.final}")
    return "\n".join(lines)


# --- finetune a checkpoint -------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from pipelines import run_lock
    from pipelines.finetune import command
    from pipelines.finetune.glue import BadRowError
    from pipelines.run_root import check_run_root

    cfg = load_config(args)
    try:
        checkpoint, tasks = command.prepare(args.checkpoint, cfg.finetune)  # every input checked, nothing run
    except (command.BadInputError, BadRowError) as e:
        raise UsageError(str(e)) from e
    check_run_root(cfg.root)
    try:  # the same one-driver-per-root lock as `run`
        with run_lock.hold(cfg.root, cfg.lock.lease_s):
            return _finetune_locked(cfg, checkpoint, tasks, args.verbose)
    except run_lock.LockHeld as e:
        raise UsageError(str(e)) from e
    except run_lock.LockLost as e:
        print(f"bert-pipeline finetune: {e}", file=sys.stderr)
        return 1


def _finetune_locked(cfg, checkpoint: str, tasks, verbose: bool = False) -> int:
    from pipelines import console, storage
    from pipelines.finetune import command
    from pipelines.finetune.config import task_output_uri
    from pipelines.run_root import RunLog

    out = command.output_root(cfg.root)
    to_run = any(not storage.exists(storage.join(task_output_uri(out, t, checkpoint), "result.json"))
                 for t in tasks.tasks)
    log = RunLog(cfg.root, "finetune") if to_run and not verbose else None
    console.info(f"finetune {checkpoint}: {len(tasks.tasks)} task(s) ({', '.join(t.name for t in tasks.tasks)}) "
                 f"-> {out}" + (f"; Ray's logs: {log.shown}" if log else ""))
    t0 = time.time()
    try:
        with ray_for(cfg, to_run, log):
            summary = command.finetune_checkpoint(checkpoint, tasks, cfg.root, log=console.info)
    finally:
        console.clear()
        if log:
            log.publish()
    console.info(f"\nfinished in {time.time() - t0:.0f}s; results in {storage.join(out, 'results.md')}\n")
    console.info(storage.read_bytes(storage.join(out, "results.md")).decode("utf-8").rstrip())
    if log:
        console.info(f"\nRay's logs: {log.final}")
    return 1 if summary["num_failed"] else 0


# --- status ---------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.dag import format_status, read_manifest
    from pipelines.bert_dag import bert_pipeline
    from pipelines.presets import PRESETS, load_run_config

    root = args.run
    is_config = root.endswith((".yaml", ".yml")) and storage.exists(root) and not storage.is_dir(root)
    if is_config or (root in PRESETS and not storage.exists(root)):  # a folder named `demo` is a run root
        root = load_run_config(root).root
    root = storage.absolute(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise UsageError(f"{root} holds no run (no manifest.json)")
    names = bert_pipeline().names()
    names += [n for n in manifest["stages"] if n not in names]
    print(f"run at {root} (config {manifest['config_hash']})")
    print(format_status(manifest, names))
    return 0


# --- cluster jobs ---------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    from cluster import jobs
    from pipelines.bert_dag import bert_pipeline, expand_inputs
    from pipelines.typed_config import to_dict

    if args.finetune:
        return submit_finetune(args)
    cfg = load_config(args)
    names = bert_pipeline().names()
    for flag, stage in (("--from", args.from_stage), ("--until", args.until)):
        if stage and stage not in names:
            raise UsageError(f"{flag} {stage!r}: no such stage; stages are {', '.join(names)}")
    if not any(u.startswith("demo:") for u in cfg.data.inputs):
        expand_inputs(cfg.data.inputs)  # a local path here is not the cluster's; still, catch typos in s3:// globs
    address = _check_root_visible(cfg.root, args.address)
    entrypoint = jobs.run_entrypoint(to_dict(cfg), args.from_stage, args.until, args.verbose)
    job = jobs.submit(args.address, entrypoint, metadata={"run_root": cfg.root, "name": cfg.name})
    print(f"submitted job {job} to {address} (run root {cfg.root})", flush=True)
    if args.no_follow:
        return 0
    state = follow_console(args.address, job)
    print(f"job {job}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def submit_finetune(args: argparse.Namespace) -> int:
    """``finetune`` as a Ray job: config, checkpoint and task files are checked here (the job checks them
    again where it runs), then the resolved config travels as JSON, as for ``run``."""
    from cluster import jobs
    from pipelines.finetune import command
    from pipelines.finetune.glue import BadRowError
    from pipelines.typed_config import to_dict

    if args.from_stage or args.until:
        raise UsageError("--from/--until are DAG stages; --finetune runs no DAG")
    cfg = load_config(args)
    try:  # here, as `run` does for its inputs; local paths must then be the cluster's paths too
        checkpoint, _ = command.prepare(args.finetune, cfg.finetune)
    except (command.BadInputError, BadRowError) as e:
        raise UsageError(str(e)) from e
    address = _check_root_visible(cfg.root, args.address)
    job = jobs.submit(args.address, jobs.finetune_entrypoint(checkpoint, to_dict(cfg), args.verbose),
                      metadata={"run_root": cfg.root, "name": cfg.name, "checkpoint": checkpoint})
    print(f"submitted job {job} to {address}: finetune {checkpoint} (results under "
          f"{command.output_root(cfg.root)})", flush=True)
    if args.no_follow:
        return 0
    state = follow_console(args.address, job)
    print(f"job {job}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def _check_root_visible(root: str, address: str | None) -> str:
    """The job's address; refuses a local run root that the cluster's nodes cannot see. A cluster on this
    machine (a loopback address) sees this machine's absolute paths (the config made the root absolute
    here, not in the job's working directory); any other cluster needs shared storage."""
    from cluster import jobs
    from pipelines import storage

    address = jobs.resolve_address(address)
    if storage.is_local(root) and not jobs.is_loopback(address):
        raise UsageError(f"run root {root} is a path on this machine, which the cluster at {address} cannot see; "
                         "give root=s3://BUCKET/PREFIX (or submit to a cluster on this machine)")
    return address


def follow_console(address: str | None, job: str) -> str:
    """Follow a job's logs as the job's console: its own lines, without the two Ray's job supervisor
    writes first (the runtime env set-up, and the entrypoint with the whole resolved config);
    ``bert-pipeline logs JOB`` shows everything."""
    from cluster import jobs

    pending = [""]

    def write(chunk: str) -> None:
        *lines, pending[0] = (pending[0] + chunk).split("\n")
        kept = [line for line in lines if not _supervisor_line(line)]
        if kept:
            sys.stdout.write("\n".join(kept) + "\n")
            sys.stdout.flush()

    state = jobs.follow(address, job, write=write)
    if pending[0] and not _supervisor_line(pending[0]):
        print(pending[0])
    return state


def _supervisor_line(line: str) -> bool:
    return line.startswith("Running entrypoint for job ") or "INFO job_manager.py:" in line


def cmd_logs(args: argparse.Namespace) -> int:
    from cluster import jobs

    if args.follow:
        return 0 if jobs.follow(args.address, args.job) == "SUCCEEDED" else 1
    sys.stdout.write(jobs.logs(args.address, args.job))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from cluster import jobs

    stopped = jobs.stop(args.address, args.job)
    state = jobs.wait(args.address, args.job, timeout_s=60)
    print(f"job {args.job}: {'stop requested' if stopped else 'already finished'}; now {state}")
    return 0


COMMANDS = {"run": cmd_run, "finetune": cmd_finetune, "status": cmd_status, "submit": cmd_submit, "logs": cmd_logs,
            "stop": cmd_stop}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv or ["run", "demo"])
    # key=value overrides may come after the --flags; argparse leaves those in `extra`
    unknown = [a for a in extra if "=" not in a or a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if args.command is None:
        _parser().print_help()
        return 2
    from cluster.jobs import ClusterError
    from pipelines.dag import Interrupted, PipelineError, StageFailed
    from pipelines.run_root import StorageError

    try:
        if args.command in ("submit", "logs", "stop"):  # Ray's client-side chatter to a log file
            from cluster.jobs import quiet_ray

            with quiet_ray():
                code = COMMANDS[args.command](args)
        else:
            code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except (ConfigError, UsageError, ClusterError, StorageError) as e:
        print(f"bert-pipeline {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        where = f" {e}" if isinstance(e, Interrupted) else ""
        print(f"bert-pipeline {args.command}: interrupted{where}", file=sys.stderr)
        return 130
    except (StageFailed, RayStartError) as e:
        print(f"bert-pipeline {args.command}: {e}", file=sys.stderr)
        return 1
    except PipelineError as e:
        print(f"bert-pipeline {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bert-pipeline status ROOT | head`: the reader has gone, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
