"""Peak memory and time of one nsp_pairs partition: the stage's reducer (``write_partitions``: pairs
made and written as parquet) on a synthetic TOKENIZED table.

    python -m bench.nsp_partition --tokens 2.5e7      # one partition of the 2 GB bench.scale run (16 partitions)
    python -m bench.nsp_partition --tokens 2.5e6      # ... of the 0.2 GB run

The table has ``--tokens`` tokens in sentences of 5-29 tokens and documents of 5-34 sentences (seeded),
one chunk, as a shuffle reduce hands it over. The run is in a fresh process, started with the environment
of a Ray node the pipeline starts (``cluster.ray_settings.NODE_ENV``: the allocators of its workers), so
``ru_maxrss`` minus the RSS just before the call is what the stage's reducer adds for one partition. The output file's digest
is printed, so two commits can be checked for identical bytes as well as compared.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import psutil
import pyarrow as pa

from pipelines import schemas
from pipelines.stages import nsp_pairs


def synthetic_partition(tokens: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    sent_len = rng.integers(5, 30, max(1, tokens // 17)).astype(np.int32)
    flat = rng.integers(1000, 30000, int(sent_len.sum())).astype(np.int32)
    sent_off = np.concatenate([[0], np.cumsum(sent_len)]).astype(np.int32)
    doc_off = np.concatenate([[0], np.cumsum(rng.integers(5, 35, len(sent_len) // 20 + 1))])
    doc_off = np.append(doc_off[doc_off < len(sent_len)], len(sent_len)).astype(np.int32)
    sentences = pa.ListArray.from_arrays(pa.array(doc_off), pa.ListArray.from_arrays(pa.array(sent_off),
                                                                                     pa.array(flat)))
    ids = pa.array([f"doc#{i:012d}" for i in range(len(doc_off) - 1)])
    return pa.table({"doc_id": ids, "sentence_ids": sentences}).cast(schemas.TOKENIZED)


def main(argv: list[str] | None = None) -> dict:
    from cluster.ray_settings import NODE_ENV

    if argv is None and any(k not in os.environ for k in NODE_ENV):  # as a worker starts: before pyarrow allocates
        os.execve(sys.executable, [sys.executable, "-m", "bench.nsp_partition", *sys.argv[1:]],
                  {**NODE_ENV, **os.environ})
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=2.5e7)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--dupe-factor", type=int, default=1)
    args = ap.parse_args(argv)
    table = synthetic_partition(int(args.tokens))
    cfg = nsp_pairs.NspConfig(max_seq_length=args.max_seq_length, dupe_factor=args.dupe_factor, cls_id=101, sep_id=102)
    partitioned = table.append_column("partition", pa.array(np.zeros(table.num_rows, np.int32)))
    with tempfile.TemporaryDirectory() as tmp:
        before = psutil.Process().memory_info().rss / 2**20
        start = time.perf_counter()
        written = nsp_pairs.write_partitions(partitioned, cfg, tmp, {})
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (name,) = written.column("name").to_pylist()
        data = open(os.path.join(tmp, name), "rb").read()
    stats = json.loads(written.column("stats")[0].as_py())
    report = {"tokens": int(args.tokens), "documents": table.num_rows, "input_mb": round(table.nbytes / 2**20),
              "rss_before_mb": round(before), "peak_rss_mb": round(peak), "added_mb": round(peak - before),
              "seconds": round(seconds, 2), "pairs": stats["pairs"], "file_mb": round(len(data) / 2**20),
              "file_sha256": hashlib.sha256(data).hexdigest()[:16]}
    print(report)
    return report


if __name__ == "__main__":
    main()
