"""The data stages through the DAG (``run_until(cfg, "nsp_pairs")``) on a real S3-compatible server
(moto on 127.0.0.1): raw text read from ``s3://``, every stage committed under an ``s3://`` run root
beside the run's manifest, and the vocabulary taken from ``s3://``."""
from __future__ import annotations

import gzip
import os

import boto3
import numpy as np

from pipelines import stage_store, storage
from pipelines.presets import build_run_config
from pipelines.run_config import run_until
from pipelines.stages.dynamic_masking import MaskInstances, VocabInfo
from pipelines.stages.wordpiece import load_tokenizer
from tests.pipelines.test_preprocess import STAGES, data_outputs


def test_s3_in_and_out(ray_session, s3_bucket, demo_files, minilm_dir):
    bucket = s3_bucket[len("s3://"):]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    with gzip.open(demo_files[0], "rt", encoding="utf-8") as f:
        docs = f.read().split("\n\n")[:300]
    for i in range(2):
        body = gzip.compress("\n\n".join(docs[i::2]).encode("utf-8"))
        s3.put_object(Bucket=bucket, Key=f"corpus/part-{i}.txt.gz", Body=body)
    with open(os.path.join(minilm_dir, "vocab.txt"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="vocab/vocab.txt", Body=f.read())

    root = f"{s3_bucket}/work"
    cfg = build_run_config({"root": root, "pretrain": {"phases": [{"max_seq_length": 128}]},
                            "data": {"inputs": [f"{s3_bucket}/corpus/*.txt.gz"],
                                     "wordpiece": {"vocab_file": f"{s3_bucket}/vocab/vocab.txt"}}})
    outputs = run_until(cfg, "nsp_pairs")
    uris = data_outputs(outputs)
    assert all(u.startswith(root + "/") and stage_store.is_complete(u) for u in uris.values())
    assert stage_store.read_table(uris["read"]).column("doc_id")[0].as_py() == f"{s3_bucket}/corpus/part-0.txt.gz#000000000000"
    nsp = stage_store.read_table(uris["nsp_pairs"])
    assert nsp.num_rows == stage_store.read_stats(uris["nsp_pairs"])["pairs"] > 300
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="work/")["Contents"]]
    assert not any("/_tmp-" in k for k in keys)
    assert {k.split("/")[1] for k in keys} - {""} == {*STAGES, "manifest.json"}  # "work/" is a directory marker
    assert run_until(cfg, "nsp_pairs") == outputs  # complete: nothing redone

    tok = load_tokenizer(uris["wordpiece"])
    rows = nsp.slice(0, 8).to_pydict()  # masked as the trainer's masking stage does
    batch = MaskInstances(VocabInfo.from_tokenizer(tok), seed=12345, max_seq_length=128, epoch=0)(
        {k: np.asarray(v, dtype=object) if k in ("input_ids", "token_type_ids") else np.asarray(v) for k, v in rows.items()})
    assert batch["input_ids"].shape == (8, 128)
    assert storage.exists(storage.join(uris["nsp_pairs"], "manifest.json"))
