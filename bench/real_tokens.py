"""The share of real tokens in what a pretraining step computes, for the base preset's two phases (seq 128 and
512) on the bench corpus, three ways:

- **padded** (today's paper recipe without bins): every row of ``nsp_pairs`` padded to ``max_seq_length``;
- **binned** (the base preset: ``length_bins`` [32, 64, 96] at 128, [128, 256, 384] at 512): the trainer's own
  epoch order (``inputs.epoch_windows`` -> ``window_permutation`` -> ``binned_order``), cut into the base
  preset's micro-batches (16 rows), each computed at its bin's bound (``engine.fit_to_bin``);
- **packed** (``base-mlm``): ``mlm_packs``' full-sentence packs of the same tokens.

The data: the bench corpus (``bench.preprocess``'s, >= 50 MB of Debian documentation), the base preset's data
stages ``--until nsp_pairs`` with the bert-base-uncased vocabulary (``nsp_pairs`` at dupe_factor 1: the
share does not depend on the number of passes), then ``mlm_packs`` on the same tokenized output.

    python -m bench.real_tokens                  # builds the corpus if needed; stage outputs kept in --root
    python -m bench.real_tokens --out real_tokens.json

Figures (2026-12-07, this 2-core box, load 2.8-3.4; 15.3 MB of gzipped corpus, 11.7 M tokens after cleaning
and near-duplicate removal, dupe_factor 1), real tokens per computed position:

| phase | NSP instances | mean tokens | shorter than max | padded | binned (micro-batch 16) | packed |
|---|---|---|---|---|---|---|
| seq 128 | 140,642 | 107.7 | 39.3% | 84.1% | 94.8% (72% of micro-batches at 128, 13% at 96, 12% at 64, 3% at 32) | 99.99% (93,183 packs, 16 short: each partition's last) |
| seq 512 | 68,330 | 241.4 | 82.0% | 47.1% | 82.5% (36% at 128, 26% at 256, 13% at 384, 26% at 512) | 99.96% (23,030 packs) |
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

BINS = {128: (32, 64, 96, 128), 512: (128, 256, 384, 512)}
MICRO = 16  # the base preset's micro_batch_size, both phases
SEED = 0
ROOT = os.path.join(tempfile.gettempdir(), "bench_real_tokens")


@contextlib.contextmanager
def local_ray(num_cpus: int = 2):
    """A local Ray for the data stages (the node environment the pipeline sets, no progress bars), shut down
    on leaving."""
    import ray

    from cluster.ray_settings import system_config, use_node_env

    use_node_env()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _system_config=system_config())
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def lengths_of(files: list[str]) -> list[np.ndarray]:
    return [pq.read_table(f, columns=["num_tokens"]).column("num_tokens").to_numpy() for f in files]


def binned_share(files: list[str], bins: tuple[int, ...], micro: int = MICRO, seed: int = SEED) -> dict[str, float]:
    """Real tokens over computed positions for one epoch of the trainer's binned order (all of it: every
    window, so no row is left out of the count)."""
    from pipelines.pretrain.inputs import InstancePlan, binned_order, epoch_windows, window_permutation

    plan = InstancePlan.from_files(files)
    per_file = lengths_of(files)
    chunks = plan.chunks()
    order_lengths = []
    for index, window in enumerate(epoch_windows(plan, seed, 0)):
        lengths = np.concatenate([per_file[f][a:b] for f, a, b in (chunks[c] for c in window.chunks)])
        order = window_permutation(seed, 0, index, window.size)
        order_lengths.append(lengths[binned_order(order, lengths, window.start, micro, bins, seed, 0, index)])
    epoch = np.concatenate(order_lengths)
    usable = len(epoch) // micro * micro
    batches = epoch[:usable].reshape(-1, micro)
    widths = np.asarray(bins)[np.searchsorted(bins, batches.max(axis=1))]
    width_share = {int(b): float((widths == b).mean()) for b in bins}
    return {"share": float(batches.sum() / (widths.sum() * micro)), "micro_batches": int(len(batches)),
            "micro_batches_per_width": width_share}


def data_stages(root: str, corpus: list[str]) -> dict[str, dict[str, str]]:
    """The base preset's data stages on ``corpus`` under ``root`` (done stages are skipped on a re-run)."""
    from pipelines.bert_dag import run_until
    from pipelines.presets import load_run_config

    from bench.preprocess import vocab_file

    cfg = load_run_config("base", [f"root={root}", "ray.address=null", f"data.inputs={json.dumps(corpus)}",
                                   f"data.wordpiece.vocab_file={vocab_file()}", "data.nsp_pairs.dupe_factor=1"])
    return run_until(cfg, "nsp_pairs", log=lambda line: None)


def measure(root: str, corpus: list[str]) -> dict:
    from pipelines import stage_store
    from pipelines.stages.mlm_packs import PackConfig, run_mlm_packs
    from pipelines.stages.wordpiece import Vocabulary

    started = time.time()
    outputs = data_stages(root, corpus)
    vocabulary = Vocabulary.of(outputs["wordpiece"]["output"])
    tokens = stage_store.read_stats(outputs["tokenize"]["output"])["tokens"]
    out = {"corpus_files": len(corpus), "corpus_mb": round(sum(os.path.getsize(f) for f in corpus) / 1e6, 1),
           "tokenized_tokens": tokens, "micro_batch": MICRO, "phases": {}}
    for length in (128, 512):
        pairs = stage_store.data_files(outputs["nsp_pairs"][f"seq{length}"])
        lengths = np.concatenate(lengths_of(pairs))
        packs_uri = run_mlm_packs(PackConfig(max_seq_length=length), outputs["tokenize"]["output"], root, vocabulary)
        packs = stage_store.read_stats(packs_uri)
        out["phases"][length] = {
            "instances": int(len(lengths)), "mean_tokens": round(float(lengths.mean()), 1),
            "shorter_than_max": round(float((lengths < length).mean()), 4),
            "padded": round(float(lengths.sum() / (len(lengths) * length)), 4),
            "binned": {k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in binned_share(pairs, BINS[length]).items()},
            "bins": list(BINS[length]),
            "packed": round(1 - packs["padding_fraction"], 4), "packs": packs["packs"],
            "full_packs": packs["full_packs"]}
    out["seconds"] = round(time.time() - started, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    from bench.preprocess import CORPUS_DIR, ensure_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=CORPUS_DIR)
    ap.add_argument("--root", default=ROOT, help="where the stage outputs are kept (and reused)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    corpus = ensure_corpus(args.corpus)
    with local_ray():
        result = measure(args.root, corpus)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for length, p in result["phases"].items():
        print(f"seq {length}: {p['instances']:,} NSP instances, mean {p['mean_tokens']} tokens "
              f"({100 * p['shorter_than_max']:.1f}% shorter than {length}); real tokens per computed position: "
              f"padded {100 * p['padded']:.1f}%, binned {100 * p['binned']['share']:.1f}% (bins {p['bins']}, "
              f"micro-batch {MICRO}), packed {100 * p['packed']:.2f}% ({p['packs']:,} packs)", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
