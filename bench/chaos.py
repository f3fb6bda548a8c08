"""Seeded driver-kill fuzz over the whole DAG (a soak run, not in CI).

    python -m bench.chaos                       # 5 kills, seed 0, work dir under /tmp
    python -m bench.chaos --kills 3 --seed 7 --work /tmp/chaos-bench

One uninterrupted reference run of a tiny config (``bert-pipeline run``: the demo preset on ~400 documents
of the demo corpus, a 1000-piece vocabulary, 40 pretraining steps, a small fine-tuning task), then the same
config on a second run root, where the driver is killed with SIGKILL (its process group: its local Ray
goes too) ``--kills`` times at seeded random moments, and rerun after each; a last rerun finishes the run.
The moments are ``--kills`` points drawn uniformly over the reference's timeline, taken in time order: a
stage and seconds into it, waited for by watching the manifest (so the box's load does not move a kill to
another stage). A pretraining kill also says the last checkpoint Ray Train had committed (the one the
rerun resumes from; none: it starts the phase over). Checked at the end:

- no finished stage is redone: a stage done when a driver was killed keeps its attempt count, its
  ``finished`` time and its outputs in the final manifest;
- the results equal the reference's: every data stage's output files, byte for byte (``stats.json`` aside:
  it holds seconds), the pretraining steps (each once, the same last step) and the data cursor of the
  last checkpoint (epoch, rows consumed), the fine-tuning tasks and metric names of the results table.
  The pretrained weights and so the scores are compared too, and reported, but not required to match when
  pretraining itself was interrupted: a resumed rank reseeds its dropout at the resume step.

Prints one row per kill: case, moment, stage running when killed, outcome.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from pipelines import storage
from pipelines.dag import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_STAGES = ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs")


def write_config(work: str, root: str, num_docs: int) -> str:
    import pipelines

    corpus = os.path.join(work, "docs.txt")
    if not os.path.exists(corpus):
        with gzip.open(os.path.join(os.path.dirname(pipelines.__file__), "demo", "corpus", "python-000.txt.gz"),
                       "rt", encoding="utf-8") as f:
            docs = f.read().split("\n\n")[:num_docs]
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs) + "\n")
    path = os.path.join(work, f"{os.path.basename(root)}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"""
preset: demo
name: chaos
root: {root}
data:
  inputs: ["{corpus}"]
  wordpiece: {{vocab_size: 1000}}
  nsp_pairs: {{max_seq_length: 64, dupe_factor: 1}}
pretrain:
  checkpoint_every: 10
  metrics_every: 5
  phases:
    - {{max_seq_length: 64, global_batch_size: 16, micro_batch_size: 8, num_steps: 40, warmup_steps: 4,
       learning_rate: 0.001, max_predictions_per_seq: 10}}
finetune:
  tasks:
    - name: movie_sentiment
      data_uri: "demo:task"
      spec: {{name: movie_sentiment, text_a: sentence, labels: ["0", "1"], metrics: [accuracy], test_files: []}}
      hyper_params: {{learning_rate: 0.0001, batch_size: 32, num_epochs: 1, max_seq_length: 64,
                      max_train_examples: 128, max_eval_examples: 128}}
      num_cpus: 1
""")
    return path


def pick_moments(rng: random.Random, count: int, order: list[str], seconds: dict[str, float]) -> list[tuple[str, float]]:
    """``count`` points drawn uniformly over the reference's timeline, in time order: (stage, seconds into it)."""
    out = []
    for point in sorted(rng.uniform(0, sum(seconds.values())) for _ in range(count)):
        for name in order:
            if point <= seconds[name] or name == order[-1]:
                out.append((name, min(point, seconds[name])))
                break
            point -= seconds[name]
    return out


def committed_steps(root: str) -> list[int]:
    """Pretraining checkpoints Ray Train has committed (its run snapshot lists them)."""
    steps = []
    for f in storage.list_files(root) if os.path.isdir(os.path.join(root, "pretrain")) else []:
        if f.endswith("/checkpoint_manager_snapshot.json"):
            try:
                steps += [r["metrics"]["step"] for r in storage.read_json(f).get("checkpoint_results", [])]
            except (OSError, ValueError):
                pass
    return sorted(steps)


def wait_into_stage(proc: subprocess.Popen, root: str, stage: str, offset: float) -> float:
    """Wait until ``stage`` runs, then ``offset`` seconds more (or until it is over: then whatever runs
    next is killed). Returns the seconds since the driver started."""
    start = time.time()
    while proc.poll() is None and running_stage(root) != stage and stage not in done_records(root):
        time.sleep(0.05)
    begun = time.time()
    while proc.poll() is None and time.time() - begun < offset and running_stage(root) == stage:
        time.sleep(0.05)
    return time.time() - start


def start_driver(config: str, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]), RAY_ADDRESS="local")
    log = open(log_path, "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", config], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def last_error(log_path: str, offset: int) -> str:
    """The last exception line the driver wrote to its log after ``offset``."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        lines = [line for line in f.read().decode("utf-8", "replace").splitlines()  # the driver's, not its workers'
                 if not line.startswith(("\x1b", "(")) and line.split(":")[0].split(".")[-1].endswith(
                     ("Error", "Exception", "Failed"))]
    return lines[-1][:120] if lines else "(no error logged)"


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and its process group (its own local Ray); nothing else."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def running_stage(root: str) -> str:
    manifest = read_manifest(root) if storage.exists(os.path.join(root, "manifest.json")) else None
    if manifest is None:
        return "(before the first stage)"
    running = [n for n, s in manifest["stages"].items() if s["state"] == "running"]
    return running[0] if running else "(between stages)"


def stage_seconds(manifest: dict) -> dict[str, float]:
    return {n: s["seconds"] for n, s in manifest["stages"].items()}


def done_records(root: str) -> dict[str, dict]:
    manifest = read_manifest(root) if storage.exists(os.path.join(root, "manifest.json")) else None
    if manifest is None:
        return {}
    return {n: {k: s[k] for k in ("attempts", "finished", "outputs")}
            for n, s in manifest["stages"].items() if s["state"] == "done"}


def digest(uri: str) -> dict[str, str]:
    if storage.exists(uri) and not storage.is_dir(uri):
        return {os.path.basename(uri): hashlib.sha256(storage.read_bytes(uri)).hexdigest()}
    return {os.path.relpath(f, uri): hashlib.sha256(storage.read_bytes(f)).hexdigest()
            for f in storage.list_files(uri) if not f.endswith("stats.json")}


def pretrain_summary(manifest: dict) -> dict:
    export = manifest["stages"]["pretrain"]["outputs"]["output"]
    phase = export.rsplit("/export", 1)[0]
    steps = [json.loads(line)["step"] for line in storage.read_bytes(phase + "/metrics.jsonl").decode().splitlines()]
    run_dir = phase.rsplit("/", 1)[0]
    states = [storage.read_json(f) for f in storage.list_files(run_dir) if f.endswith("/train_state.json")]
    last = max(states, key=lambda s: s["step"])
    return {"steps": steps, "cursor": (last["step"], last["epoch"], last["samples_in_epoch"]),
            "weights": digest(export + "/model.safetensors")}


def results_table(manifest: dict, numbers: bool) -> list[list[str]]:
    """The results table's rows (timing column dropped); with ``numbers`` False, digits masked: which
    tasks and metrics it reports."""
    import re

    rows, drop = [], None
    for line in storage.read_bytes(manifest["stages"]["report"]["outputs"]["output"]).decode().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None or set("".join(cells)) <= set("-"):
            continue
        if "s/epoch" in cells:
            drop = cells.index("s/epoch")
        if drop is not None and len(cells) > drop:
            cells = cells[:drop] + cells[drop + 1:]
        rows.append(cells if numbers else [re.sub(r"\d+(\.\d+)?", "#", c) for c in cells])
    return rows


def compare(reference: dict, final: dict) -> dict[str, bool]:
    def outputs(manifest: dict, stage: str) -> dict[str, dict[str, str]]:
        return {key: digest(uri) for key, uri in manifest["stages"][stage]["outputs"].items()}

    same = {stage: outputs(reference, stage) == outputs(final, stage) for stage in DATA_STAGES}
    ref_pt, fin_pt = pretrain_summary(reference), pretrain_summary(final)
    same["pretrain steps and cursor"] = ref_pt["steps"] == fin_pt["steps"] and ref_pt["cursor"] == fin_pt["cursor"] \
        and len(set(fin_pt["steps"])) == len(fin_pt["steps"])
    same["results table (tasks, metrics)"] = results_table(reference, False) == results_table(final, False)
    same["pretrained weights (informative)"] = ref_pt["weights"] == fin_pt["weights"]
    same["results table numbers (informative)"] = results_table(reference, True) == results_table(final, True)
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=int, default=400, help="documents of the demo corpus to use")
    parser.add_argument("--work", default=None, help="work directory (default: a new one under /tmp); a finished "
                        "reference run in it is reused")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench-chaos-")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    ref_root, root = os.path.join(work, "reference"), os.path.join(work, "chaos")
    print(f"work dir {work}; seed {args.seed}; {args.kills} kills", flush=True)

    t0 = time.time()
    reference = read_manifest(ref_root) if os.path.exists(os.path.join(ref_root, "manifest.json")) else None
    if reference is None or any(s["state"] != "done" for s in reference["stages"].values()):
        ref = start_driver(write_config(work, ref_root, args.docs), os.path.join(work, "reference.log"))
        if ref.wait() != 0:
            raise SystemExit(f"the reference run failed; see {work}/reference.log")
        reference = read_manifest(ref_root)
    else:
        print(f"reusing the finished reference run in {ref_root}")
    if os.path.exists(root):
        shutil.rmtree(root)  # each fuzz starts on a fresh run root
    seconds = stage_seconds(reference)
    print(f"reference run: {time.time() - t0:.0f}s; stages: "
          + ", ".join(f"{n} {s:.0f}s" for n, s in seconds.items()), flush=True)

    config = write_config(work, root, args.docs)
    order = sorted(seconds, key=lambda n: reference["stages"][n]["started"])
    rows, done_at_kills = [], []
    for case, (stage, offset) in enumerate(pick_moments(rng, args.kills, order, seconds), 1):
        done = done_records(root)
        if stage in done:  # an earlier kill landed later than this point: aim at the next stage to do
            stage, offset = next(n for n in order if n not in done), 0.0
        log_path = os.path.join(work, "chaos.log")
        log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        proc = start_driver(config, log_path)
        start = time.time()
        moment = wait_into_stage(proc, root, stage, offset)
        if proc.poll() is not None:
            rows.append((case, moment, f"(aimed at {stage})",
                         f"driver exited {proc.returncode} first: {last_error(log_path, log_start)}"))
            continue
        running = running_stage(root)
        kill_group(proc)
        steps = committed_steps(root)
        done_at_kills.append((case, done_records(root)))
        where = f"{running} +{offset:.0f}s" if running == stage else running
        if running == "pretrain":
            where += f", ckpt {steps[-1] if steps else 'none'}"
        rows.append((case, time.time() - start, where, None))

    t1 = time.time()
    last = start_driver(config, os.path.join(work, "chaos.log"))
    code = last.wait()
    final = read_manifest(root)
    print(f"final rerun: {time.time() - t1:.0f}s, exit {code}", flush=True)

    # Outcome of each kill: what the later drivers did with the stages done at that moment.
    outcomes = {}
    for case, done in done_at_kills:
        redone = [n for n, rec in done.items() if {k: final["stages"][n][k] for k in rec} != rec]
        outcomes[case] = (f"resumed; {len(done)} done stage(s) kept" if not redone
                          else f"REDONE: {', '.join(redone)}")
    print(f"\n{'case':>4}  {'moment':>8}  {'stage running when killed':<34}  outcome")
    for case, moment, stage, outcome in rows:
        print(f"{case:>4}  {moment:>7.1f}s  {stage:<34}  {outcome or outcomes[case]}")
    ok = code == 0 and all(s["state"] == "done" for s in final["stages"].values())
    print(f"\nfinal run complete: {ok}; attempts per stage: "
          + ", ".join(f"{n} {s['attempts']}" for n, s in final["stages"].items()))
    same = compare(reference, final) if ok else {}
    for what, equal in same.items():
        print(f"  equal to the reference: {what}: {equal}")
    required = [v for k, v in same.items() if "informative" not in k]
    survived = ok and all(required) and not any(o.startswith("REDONE") for o in outcomes.values())
    print(f"\n{len(done_at_kills)} kill(s), survived: {survived}")
    return 0 if survived else 1


if __name__ == "__main__":
    sys.exit(main())
