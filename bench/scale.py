"""The data chain at scale: the DAG's read -> clean -> near_dedup -> split -> wordpiece -> tokenize -> nsp_pairs on a
generated corpus (``bench.scale_corpus``), on a local multi-node Ray cluster, with memory,
object-store, task and object figures per stage.

    python -m bench.scale                               # the issue's runs: 0.2, 0.5, 2 GB on 4 nodes, 0.2 GB on 1
    python -m bench.scale --runs 0.2:4 0.2:1            # GB:NODES each
    python -m bench.scale --gb 0.2 0.5 --nodes 4        # every size on every node count
    python -m bench.scale --runs 0.2:4 --near-dedup on off --repeat 2   # near_dedup's cost: on, off, on, off
    python -m bench.scale --report /tmp/bert_scale/run-*.json   # tables and goals from saved runs
    python -m bench.scale --runs 2:4 --root /tmp/r2g      # keep the outputs; rerun after deleting one stage's
                                                        # output dir to re-measure that stage alone

Cost on the chain of 2026-12-02 (before the data-plane rewrite), 2-core box at load average 20-45:
0.2 GB took ~5 min per run and 0.5 GB ~9 min, the driver peaking at 1.1 and 2.1 GB. Extrapolated,
2 GB takes ~40 min there and its driver needs several GB (nsp_pairs' shuffle objects, inlined in
the driver's memory store, grow as shards x partitions).

Each run starts its own ``ray.cluster_utils.Cluster`` (every node its own raylet and object store,
all on this machine) in a fresh process, so one run's memory does not carry into the next. Corpora
are generated once under ``--corpus-dir`` and reused. Outputs: ``run-{GB}gb-{N}n.json`` per run, and
``scale.json`` and ``scale.md`` (all runs and the goals) under ``--out``.

Per stage (and end to end):
- seconds: wall time of the stage, run by the DAG (``run_until``; end to end: their sum, without the
  pauses the meter takes between stages to collect task events);
- tokens/s per core: the corpus's WordPiece tokens (tokenize's count) / seconds / cores, where cores
  = min(Ray CPUs, CPUs this process may use): 4 one-CPU nodes on a 2-core box count 2 cores;
- driver peak RSS: this process, sampled every 0.5 s;
- worker peak RSS: the largest RSS of one Ray worker process (``ray::*`` processes under this one,
  agents excluded), also the peak of their sum, the peak of RSS minus shared pages (what Ray's
  "Memory Management" guide calls a worker's heap: the object-store pages a worker maps count in its
  RSS and as shared, and not subtracting them double-counts the store), and the object-store pages
  (``RssShmem``) the largest worker had mapped when it peaked; the tasks that the largest worker and
  the worker with the largest heap were running at their peaks are named;
- object store: peak bytes used and objects held over all nodes (the raylets' aggregate store stats,
  sampled every 0.5 s), plasma objects created (their cumulative counter) and bytes spilled;
- tasks: Ray tasks created in the stage, from the GCS task events (normal tasks; the actor tasks of
  Ray Data's bookkeeping actors are counted apart);
- objects: distinct object refs that appeared in the driver's reference table while the stage ran,
  sampled every 0.5 s (the driver owns every block and shuffle output here, so this counts small
  inlined objects too, which the store counter misses; an object created and freed between two
  samples is missed, so it is a lower bound), and the peak number held at once;
- duplicates: clean's ``dropped.duplicate`` against the corpus's injected copies.

Goals (issue 12), checked between the smallest and the largest corpus on the same node count:
driver peak RSS and per-worker peak heap (RSS less shared pages) within 1.5x, with the worker's
RSS counting the shared pages reported beside it; tasks and objects of every stage grow at most linearly
(ratio <= 1.1 x the size ratio); end-to-end tokens/s per core at the largest >= 90% of the smallest;
duplicates found == injected in every run.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator

from cluster.ray_settings import system_config, use_node_env

RUNS = ("0.2:4", "0.5:4", "2:4", "0.2:1")
STAGES = ("read", "clean", "near_dedup", "split", "wordpiece", "tokenize", "nsp_pairs")
MB = 1 << 20


def chain_stages(near_dedup: bool = True) -> tuple[str, ...]:
    return STAGES if near_dedup else tuple(s for s in STAGES if s != "near_dedup")


def run_chain(corpus: str, root: str, measure: Callable[[str], contextlib.AbstractContextManager],
              vocab_file: str | None = None, sample_fraction: float = 0.1, near_dedup: bool = True) -> dict[str, str]:
    """The BERT DAG up to nsp_pairs, one stage at a time (``run_until`` each stage in turn: every earlier
    one is done and skipped), each inside ``measure(stage)``; -> {stage: output URI}. ``near_dedup``
    False: the stage is off (``data.near_dedup.enabled: false``) and not measured."""
    from pipelines.presets import build_run_config
    from pipelines.bert_dag import run_until

    # the base preset's vocabulary: 30522 pieces from a 10% sample of the documents; instances of 128 tokens
    cfg = build_run_config({"root": root, "pretrain": {"phases": [{"max_seq_length": 128}]}, "data": {
        "inputs": [corpus], "wordpiece": {"vocab_file": vocab_file, "sample_fraction": sample_fraction},
        "near_dedup": {"enabled": near_dedup}}})
    out: dict[str, str] = {}
    for stage in chain_stages(near_dedup):
        with measure(stage):
            outputs = run_until(cfg, stage, log=_unless_skipped)[stage]
        out[stage] = outputs.get("output") or outputs["seq128"]
    return out


def _unless_skipped(line: str) -> None:
    if not line.endswith("done already, skipped"):  # every earlier stage, at each step
        print(line, flush=True)


class Sampler:
    """A background thread that samples memory, the object store and the driver's object refs, and
    keeps the peaks since the last ``reset``."""

    def __init__(self, address: str, interval: float = 0.5):
        import psutil
        from ray._private import internal_api

        self.me = psutil.Process()
        self.state = internal_api.get_state_from_address(address)
        self.interval = interval
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.peaks: dict[str, float] = {}
        self.peak_title, self.peak_store_pages, self.peak_private_title = "", 0, ""
        self.refs_seen: set[bytes] = set()
        self.errors = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "Sampler":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def reset(self) -> set[bytes]:
        """Start a new window; -> the refs alive now (not 'created' in the window)."""
        alive = set(self._refs())
        with self.lock:
            self.peaks, self.refs_seen, self.peak_title, self.peak_store_pages = {}, set(alive), "", 0
            self.peak_private_title = ""
        self.sample()
        return alive

    def window(self) -> tuple[dict[str, float], set[bytes]]:
        self.sample()
        with self.lock:
            return dict(self.peaks), set(self.refs_seen)

    @staticmethod
    def _refs() -> dict:
        import ray

        return ray._private.worker.global_worker.core_worker.get_all_reference_counts()

    def _workers(self) -> list:
        out = []
        for p in self.me.children(recursive=True):
            try:
                title = p.cmdline()[:1]
                if title and title[0].startswith("ray::") and "Agent" not in title[0]:
                    out.append((title[0], p.pid, p.memory_info()))
            except Exception:  # a worker that exited between the listing and the read
                continue
        return out

    def _store(self) -> dict[str, float]:
        from ray._private import internal_api

        s = internal_api.get_memory_info_reply(self.state, timeout_seconds=10).store_stats
        return {"store_bytes": s.object_store_bytes_used, "store_objects": s.num_local_objects,
                "plasma_created": s.cumulative_created_objects, "spilled_bytes": s.spilled_bytes_total}

    def sample(self) -> None:
        try:
            titled = self._workers()
            mem = [m for _, _, m in titled]
            if titled:  # what the largest worker was running when it peaked ("ray::IDLE" between tasks)
                title, pid, top = max(titled, key=lambda t: t[2].rss)
                with self.lock:
                    if top.rss > self.peaks.get("worker_rss", 0):
                        self.peak_title = title
                        self.peak_store_pages = shmem_bytes(pid)
                    p_title, _, p_top = max(titled, key=lambda t: t[2].rss - t[2].shared)
                    if p_top.rss - p_top.shared > self.peaks.get("worker_private", 0):
                        self.peak_private_title = p_title
            values = {"driver_rss": self.me.memory_info().rss, **self._store(),
                      "worker_rss": max((m.rss for m in mem), default=0),
                      "worker_private": max((m.rss - m.shared for m in mem), default=0),
                      "workers_rss_sum": sum(m.rss for m in mem), "num_workers": len(mem)}
            refs = self._refs()
        except Exception:  # a transient RPC failure must not end the sampling
            self.errors += 1
            return
        values["driver_refs"] = len(refs)
        with self.lock:
            for key, value in values.items():
                self.peaks[key] = max(self.peaks.get(key, value), value)
            self.refs_seen.update(refs)
        # cumulative counters: keep the first and the last values of the window
        with self.lock:
            for key in ("plasma_created", "spilled_bytes"):
                self.peaks.setdefault(f"{key}_first", values[key])
                self.peaks[f"{key}_last"] = values[key]

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def shmem_bytes(pid: int) -> int:
    """The shared-memory pages ``pid`` has resident (``RssShmem`` of /proc/PID/status): for a Ray worker,
    the object-store pages it has mapped (the store is one shared-memory file every worker maps)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssShmem:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def task_events() -> dict[bytes, tuple[int, str]]:
    """task_id -> (type, function name) of every task the GCS has events of (no dashboard needed)."""
    import ray
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    out = {}
    for raw in accessor.get_task_events():
        ev = gcs_pb2.TaskEvents.FromString(raw)
        if ev.HasField("task_info"):
            out[ev.task_id] = (ev.task_info.type, ev.task_info.func_or_class_name)
        else:
            out.setdefault(ev.task_id, (-1, ""))
    return out


def settled_task_events(wait: float = 1.2, tries: int = 6) -> dict[bytes, tuple[int, str]]:
    """``task_events`` once two reads ``wait`` s apart agree (workers flush their events every second)."""
    last = task_events()
    for _ in range(tries):
        time.sleep(wait)
        now = task_events()
        if len(now) == len(last):
            return now
        last = now
    return last


def count_tasks(before: dict, after: dict) -> dict:
    from ray.core.generated import common_pb2

    new = [after[t] for t in after.keys() - before.keys()]
    normal = [name for kind, name in new if kind == common_pb2.NORMAL_TASK]
    by_name: dict[str, int] = {}
    for name in normal:
        by_name[name] = by_name.get(name, 0) + 1
    return {"tasks": len(normal), "actor_tasks": len(new) - len(normal), "tasks_by_function": by_name}


class StageMeter:
    """``measure(stage)`` for ``run_chain``: the figures of every stage, in ``self.stages``."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.stages: dict[str, dict] = {}
        self.events = settled_task_events()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        alive = self.sampler.reset()
        started = time.time()
        yield
        seconds = time.time() - started
        peaks, seen = self.sampler.window()
        events = settled_task_events()
        self.stages[stage] = {
            "seconds": round(seconds, 2),
            "driver_peak_rss_mb": round(peaks["driver_rss"] / MB), "worker_peak_rss_mb": round(peaks["worker_rss"] / MB),
            "worker_peak_private_mb": round(peaks["worker_private"] / MB), "worker_peak_task": self.sampler.peak_title,
            "worker_peak_private_task": self.sampler.peak_private_title,
            "worker_peak_store_pages_mb": round(self.sampler.peak_store_pages / MB),
            "workers_peak_rss_sum_mb": round(peaks["workers_rss_sum"] / MB), "peak_workers": peaks["num_workers"],
            "store_peak_mb": round(peaks["store_bytes"] / MB, 1), "store_peak_objects": peaks["store_objects"],
            "plasma_objects_created": peaks["plasma_created_last"] - peaks["plasma_created_first"],
            "spilled_mb": round((peaks["spilled_bytes_last"] - peaks["spilled_bytes_first"]) / MB, 1),
            "objects": len(seen - alive), "peak_driver_refs": peaks["driver_refs"],
            **count_tasks(self.events, events)}
        self.events = events
        print(f"  {stage:10s} {seconds:7.1f} s  driver {self.stages[stage]['driver_peak_rss_mb']:>5} MB  "
              f"worker {self.stages[stage]['worker_peak_rss_mb']:>5} MB  store {self.stages[stage]['store_peak_mb']:>7} MB  "
              f"tasks {self.stages[stage]['tasks']:>6}  objects {self.stages[stage]['objects']:>7}  "
              f"largest worker: {self.stages[stage]['worker_peak_task'] or '-'}; largest heap "
              f"{self.stages[stage]['worker_peak_private_mb']} MB: {self.stages[stage]['worker_peak_private_task'] or '-'}",
              flush=True)


def start_cluster(nodes: int, cpus_per_node: int, store_mb: int):
    import ray
    from ray.cluster_utils import Cluster

    # the GCS keeps events of 100k tasks by default; a 2 GB chain stays far below 10^6
    os.environ.setdefault("RAY_task_events_max_num_task_in_gcs", "1000000")
    node_args = {"num_cpus": cpus_per_node, "object_store_memory": store_mb * MB}
    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False,
                                                             "_system_config": system_config()})
    for _ in range(nodes - 1):
        cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per dataset run otherwise
    return cluster


def run_one(gb: float, nodes: int, corpus: str, record: dict, args: argparse.Namespace) -> dict:
    """One run in this process: cluster up, the chain under the meter, figures, cluster down."""
    import ray

    from pipelines import stage_store

    cpus_per_node = args.cpus_per_node or (1 if nodes > 1 else len(os.sched_getaffinity(0)))
    cores = min(nodes * cpus_per_node, len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()
    cluster = start_cluster(nodes, cpus_per_node, args.store_mb)
    sampler = Sampler(cluster.address).start()
    root = args.root or tempfile.mkdtemp(prefix="bert_scale_", dir=args.work_dir)
    try:
        meter = StageMeter(sampler)
        started = time.time()
        uris = run_chain(corpus, root, meter, args.vocab_file, args.sample_fraction, args.nd == "on")
        wall = time.time() - started
        stats = {s: stage_store.read_stats(u) for s, u in uris.items()}
        files_out = {s: len(stage_store.data_files(u)) for s, u in uris.items()}
    finally:
        sampler.close()
        ray.shutdown()
        cluster.shutdown()
        if not (args.keep or args.root):
            shutil.rmtree(root, ignore_errors=True)
    tokens = stats["tokenize"]["tokens"]
    seconds = sum(row["seconds"] for row in meter.stages.values())  # not the meter's pauses between stages
    for stage, row in meter.stages.items():
        # a stage --root already held ran in 0 s: no rate
        row.update(tokens_per_s_per_core=round(tokens / row["seconds"] / cores) if row["seconds"] else None,
                   files_out=files_out[stage],
                   stage_stats=stats[stage])
    found = stats["clean"]["dropped"]["duplicate"]
    return {"gb": gb, "nodes": nodes, "near_dedup": args.nd == "on", "cpus_per_node": cpus_per_node, "ray_cpus": nodes * cpus_per_node,
            "cores": cores, "store_mb_per_node": args.store_mb, "corpus": corpus,
            "corpus_bytes": record["bytes"], "corpus_files": len(record["files"]),
            "corpus_documents": record["documents"], "documents_read": stats["read"]["documents"],
            "tokens": tokens, "pairs": stats["nsp_pairs"]["pairs"], "seconds": round(seconds, 1),
            "wall_seconds": round(wall, 1), "tokens_per_s_per_core": round(tokens / seconds / cores) if all(
                row["seconds"] for row in meter.stages.values()) else None,
            "duplicates_injected": record["duplicates_injected"], "duplicates_found": found,
            "clean_dropped": stats["clean"]["dropped"],
            "vocab": args.vocab_file or f"trained, sample_fraction {args.sample_fraction}",
            "sampler_errors": sampler.errors, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "git": _git_head(), "stages": meter.stages}


def _git_head() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+dirty" if dirty else "")


def corpus_dir(args: argparse.Namespace, gb: float) -> str:
    return os.path.join(args.corpus_dir, f"{gb:g}gb-seed{args.seed}")


def ensure_corpus(args: argparse.Namespace, gb: float) -> tuple[str, dict]:
    from bench import scale_corpus

    out = corpus_dir(args, gb)
    spec = scale_corpus.CorpusSpec(num_bytes=int(gb * 1e9), seed=args.seed)
    return out, scale_corpus.ensure_corpus(spec, out)


def parse_runs(args: argparse.Namespace) -> list[tuple[float, int]]:
    if args.gb or args.nodes:
        return [(g, n) for g in (args.gb or [0.2]) for n in (args.nodes or [4])]
    return [(float(r.split(":")[0]), int(r.split(":")[1])) for r in args.runs]


def measure_run(gb: float, nodes: int, args: argparse.Namespace, argv: list[str], near_dedup: str = "on",
                repeat: int = 0) -> dict:
    """``run_one`` in a fresh process (so no run's memory carries into the next); -> its figures."""
    name = f"run-{gb:g}gb-{nodes}n" + ("" if near_dedup == "on" else "-nd-off") + (f"-{repeat}" if repeat else "")
    path = os.path.join(args.out, name + ".json")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", RAY_DEDUP_LOGS="0", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "bench.scale", *argv, "--one", f"{gb:g}:{nodes}", "--nd", near_dedup,
           "--result", path]
    proc = subprocess.run(cmd, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode:
        raise SystemExit(f"the run {gb:g} GB on {nodes} node(s) failed (exit {proc.returncode})")
    with open(path) as f:
        return json.load(f)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None:  # a stage reused under --root
        return float("nan")
    if not b:
        return 0.0 if not a else float("inf")
    return round(a / b, 2)


def goals(runs: list[dict]) -> list[dict]:
    """Issue 12's goals between the smallest and the largest corpus of each node count (runs with
    near_dedup on against runs with it on, off against off)."""
    out = []
    for nodes, nd in sorted({(r["nodes"], r.get("near_dedup", False)) for r in runs}, reverse=True):
        same = sorted((r for r in runs if r["nodes"] == nodes and r.get("near_dedup", False) == nd),
                      key=lambda r: r["corpus_bytes"])
        if len(same) < 2:
            continue
        small, large = same[0], same[-1]
        size = large["corpus_bytes"] / small["corpus_bytes"]
        peak = lambda r, k: max(s[k] for s in r["stages"].values())
        growth = {f"{stage}.{k}": _ratio(large["stages"][stage][k], small["stages"][stage][k])
                  for stage in STAGES if stage in small["stages"] and stage in large["stages"]
                  for k in ("tasks", "objects")}
        out.append({
            "nodes": nodes, "near_dedup": nd, "from_gb": small["gb"], "to_gb": large["gb"], "size_ratio": round(size, 2),
            "driver_rss_ratio": _ratio(peak(large, "driver_peak_rss_mb"), peak(small, "driver_peak_rss_mb")),
            "worker_rss_ratio": _ratio(peak(large, "worker_peak_rss_mb"), peak(small, "worker_peak_rss_mb")),
            "worker_private_ratio": _ratio(peak(large, "worker_peak_private_mb"), peak(small, "worker_peak_private_mb")),
            "growth": growth, "worst_growth": max(growth.items(), key=lambda kv: kv[1]),
            "throughput_ratio": _ratio(large["tokens_per_s_per_core"], small["tokens_per_s_per_core"])})
        g = out[-1]
        g["store_pages_mb"] = [peak(r, "worker_peak_store_pages_mb") if all(
            "worker_peak_store_pages_mb" in st for st in r["stages"].values()) else None for r in (small, large)]
        g["met"] = {"rss": g["driver_rss_ratio"] <= 1.5 and g["worker_private_ratio"] <= 1.5,
                    "linear": g["worst_growth"][1] <= 1.1 * size, "throughput": g["throughput_ratio"] >= 0.9}
    return out


def near_dedup_cost(runs: list[dict]) -> list[dict]:
    """For each size and node count run both ways: the chain's tokens/s per core with near_dedup on
    over off (each the mean of its runs), and the share of the chain's seconds the stage took.
    Goal: the drop (1 - ratio) at most 15%."""
    out = []
    for gb, nodes in sorted({(r["gb"], r["nodes"]) for r in runs}):
        on = [r for r in runs if (r["gb"], r["nodes"], r.get("near_dedup", False)) == (gb, nodes, True)]
        off = [r for r in runs if (r["gb"], r["nodes"], r.get("near_dedup", False)) == (gb, nodes, False)]
        if not on or not off:
            continue
        rate = lambda rs: statistics.mean(r["tokens_per_s_per_core"] for r in rs)
        ratio = round(rate(on) / rate(off), 3)
        share = statistics.mean(r["stages"]["near_dedup"]["seconds"] / r["seconds"] for r in on)
        out.append({"gb": gb, "nodes": nodes, "runs_on": len(on), "runs_off": len(off),
                    "tokens_per_s_per_core_on": [r["tokens_per_s_per_core"] for r in on],
                    "tokens_per_s_per_core_off": [r["tokens_per_s_per_core"] for r in off],
                    "ratio": ratio, "drop": round(1 - ratio, 3), "stage_share": round(share, 3),
                    "met": round(1 - ratio, 3) <= 0.15})
    return out


def markdown(runs: list[dict], checks: list[dict], costs: list[dict] = ()) -> str:
    cols = ("seconds", "tokens_per_s_per_core", "driver_peak_rss_mb", "worker_peak_rss_mb", "worker_peak_private_mb",
            "worker_peak_store_pages_mb", "workers_peak_rss_sum_mb", "store_peak_mb", "store_peak_objects", "plasma_objects_created", "spilled_mb",
            "tasks", "actor_tasks", "objects", "peak_driver_refs")
    heads = ("s", "tok/s/core", "driver MB", "worker MB", "worker priv MB", "its store pages MB", "workers sum MB", "store MB",
             "store objs", "plasma created", "spilled MB", "tasks", "actor tasks", "objects", "peak refs")
    lines = []
    for r in runs:
        lines += [f"### {r['gb']:g} GB on {r['nodes']} node(s) x {r['cpus_per_node']} CPU "
                  f"({r['cores']} cores counted), near_dedup {'on' if r.get('near_dedup') else 'off'}, git {r['git']}", "",
                  f"{r['corpus_bytes'] / 1e9:.3f} GB in {r['corpus_files']} files, {r['corpus_documents']:,} documents "
                  f"({r['documents_read']:,} read), {r['tokens']:,} tokens, {r['pairs']:,} pairs; vocabulary {r['vocab']}; "
                  f"object store {r['store_mb_per_node']} MB per node; load average {r['load_before'][0]} before, "
                  f"{r['load_after'][0]} after. Duplicates found {r['duplicates_found']:,} / injected "
                  f"{r['duplicates_injected']:,} ({'equal' if r['duplicates_found'] == r['duplicates_injected'] else 'NOT equal'}); "
                  f"clean dropped {r['clean_dropped']}.", "",
                  "| stage | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
        for stage, row in r["stages"].items():
            lines.append(f"| {stage} | " + " | ".join("-" if c not in row else "reused" if row[c] is None else f"{row[c]:,}"
                                                       for c in cols) + " |")
        total = {"seconds": r["seconds"], "tokens_per_s_per_core": r["tokens_per_s_per_core"]}
        for c in cols[2:]:
            vals = [row.get(c, 0) for row in r["stages"].values()]
            total[c] = round(sum(vals), 1) if c in ("plasma_objects_created", "spilled_mb", "tasks", "actor_tasks", "objects") else max(vals)
        lines += ["| **chain** | " + " | ".join("reused" if total[c] is None else f"{total[c]:,}" for c in cols) + " |",
                  ""]
        nsp = r["stages"]["nsp_pairs"]
        lines += [f"nsp_pairs: {r['stages']['tokenize']['files_out']} input shards x "
                  f"{nsp['stage_stats'].get('partitions')} partitions; tasks by function: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(nsp["tasks_by_function"].items())), "",
                  "largest worker by stage (what it ran when it peaked): " + "; ".join(
                      f"{stage} {row.get('worker_peak_task') or '-'}" for stage, row in r["stages"].items()), "",
                  "largest heap by stage (what that worker ran when it peaked): " + "; ".join(
                      f"{stage} {row.get('worker_peak_private_task') or '-'}" for stage, row in r["stages"].items()), ""]
    for g in checks:
        lines += [f"### Goals, {g['nodes']} node(s), near_dedup {'on' if g.get('near_dedup') else 'off'}, "
                  f"{g['from_gb']:g} -> {g['to_gb']:g} GB (size x{g['size_ratio']})", "",
                  f"- driver peak RSS x{g['driver_rss_ratio']}, worker peak memory (RSS less shared pages, Ray's measure "
                  f"of a worker's heap) x{g['worker_private_ratio']} (goal <= 1.5): {'met' if g['met']['rss'] else 'NOT met'}",
                  f"- worker peak RSS counting the shared pages x{g['worker_rss_ratio']}; the object-store pages the "
                  f"largest worker had mapped at its peak, {g['store_pages_mb'][0]} -> {g['store_pages_mb'][1]} MB, are the node's store (capped per node), not the worker's",
                  f"- tasks/objects: worst growth {g['worst_growth'][0]} x{g['worst_growth'][1]} "
                  f"(goal <= 1.1 x size = {1.1 * g['size_ratio']:.2f}): {'met' if g['met']['linear'] else 'NOT met'}",
                  f"- tokens/s per core x{g['throughput_ratio']} (goal >= 0.9): {'met' if g['met']['throughput'] else 'NOT met'}", ""]
    for c in costs:
        lines += [f"### near_dedup's cost, {c['gb']:g} GB on {c['nodes']} node(s)", "",
                  f"- chain tokens/s per core with the stage on {c['tokens_per_s_per_core_on']}, off "
                  f"{c['tokens_per_s_per_core_off']}: x{c['ratio']}, a drop of {100 * c['drop']:.1f}% (goal <= 15%): "
                  f"{'met' if c['met'] else 'NOT met'}; the stage is {100 * c['stage_share']:.1f}% of the chain's seconds", ""]
    dup = all(r["duplicates_found"] == r["duplicates_injected"] for r in runs)
    lines.append(f"Duplicates found == injected in every run: {'met' if dup else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def write_report(runs: list[dict], out: str) -> None:
    checks, costs = goals(runs), near_dedup_cost(runs)
    with open(os.path.join(out, "scale.json"), "w") as f:
        json.dump({"runs": runs, "goals": checks, "near_dedup_cost": costs}, f, indent=1)
    text = markdown(runs, checks, costs)
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=list(RUNS), help="GB:NODES each (default: %(default)s)")
    p.add_argument("--gb", type=float, nargs="+", help="sizes (with --nodes: every size on every node count)")
    p.add_argument("--nodes", type=int, nargs="+")
    p.add_argument("--cpus-per-node", type=int, default=0, help="default: 1 on several nodes, all CPUs on one")
    p.add_argument("--store-mb", type=int, default=1024, help="object store per node")
    p.add_argument("--vocab-file", help="adopt this vocab.txt instead of training one")
    p.add_argument("--sample-fraction", type=float, default=0.1, help="of documents to train WordPiece on")
    p.add_argument("--seed", type=int, default=0, help="of the corpus")
    p.add_argument("--corpus-dir", default=os.path.join(tempfile.gettempdir(), "bert_scale_corpus"))
    p.add_argument("--work-dir", default=tempfile.gettempdir(), help="stage outputs go to a temporary root here")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "bert_scale"))
    p.add_argument("--keep", action="store_true", help="keep the stage outputs")
    p.add_argument("--root", help="stage outputs go here and stay (a rerun reuses the committed ones: to re-measure one changed stage)")
    p.add_argument("--report", nargs="+", help="only build scale.md/scale.json from these run-*.json")
    p.add_argument("--near-dedup", nargs="+", choices=("on", "off"), default=["on"],
                   help="run each GB:NODES with the stage on, off, or both in turn (on off: its cost)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each GB:NODES and --near-dedup setting, interleaved")
    p.add_argument("--nd", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.report:
        runs = []
        for path in sorted({f for pattern in args.report for f in glob.glob(pattern)}):
            with open(path) as f:
                runs.append(json.load(f))
        return write_report(runs, args.out)
    if args.one:  # a child of measure_run
        gb, nodes = float(args.one.split(":")[0]), int(args.one.split(":")[1])
        corpus, record = ensure_corpus(args, gb)
        result = run_one(gb, nodes, corpus, record, args)
        with open(args.result, "w") as f:
            json.dump(result, f, indent=1)
        return
    runs = []
    for gb, nodes in parse_runs(args):
        corpus, record = ensure_corpus(args, gb)  # here, so that no run's figures include it
        print(f"{gb:g} GB on {nodes} node(s): {record['bytes'] / 1e9:.3f} GB in {len(record['files'])} files under "
              f"{corpus}, {record['duplicates_injected']:,} copies injected; load average {os.getloadavg()[0]:.2f}", flush=True)
        for repeat in range(args.repeat):
            for nd in args.near_dedup:
                runs.append(measure_run(gb, nodes, args, argv, nd, repeat))
    write_report(runs, args.out)


if __name__ == "__main__":
    main()
