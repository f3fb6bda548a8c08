import bz2
import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.stages import read

CFG = read.ReadConfig()


def numbered(lines: list[str]) -> list[tuple[int, bytes]]:
    """(byte offset, line) pairs, as ``read.iter_lines`` gives them."""
    out, offset = [], 0
    for line in lines:
        out.append((offset, line.encode("utf-8")))
        offset += len(line.encode("utf-8"))
    return out


def test_core_splits_documents_on_blank_lines():
    lines = ["First doc line one.\n", "line two.\n", "\n", "\n", "Second doc.\r\n", "   \n", "Third."]
    out = pa.concat_tables(read.core(numbered(lines), "f.txt"))
    assert out.to_pylist() == [
        {"doc_id": "f.txt#000000000000", "text": "First doc line one.\nline two."},
        {"doc_id": "f.txt#000000000032", "text": "Second doc."},
        {"doc_id": "f.txt#000000000049", "text": "Third."},
    ]


def test_core_jsonl_and_errors_name_the_byte():
    out = pa.concat_tables(read.core(numbered(['{"text": "a b"}\n', "\n", '{"text": "c", "x": 1}\n']), "f.jsonl",
                                     "jsonl"))
    assert out.column("text").to_pylist() == ["a b", "c"]
    with pytest.raises(read.ReadError, match=r"f.jsonl: byte 14: not valid JSON"):
        list(read.core(numbered(['{"text": "a"}\n', "{oops"]), "f.jsonl", "jsonl"))
    with pytest.raises(read.ReadError, match=r"f.jsonl: byte 0: no string field 'body'"):
        list(read.core(numbered(['{"text": "a"}']), "f.jsonl", "jsonl", text_field="body"))


def _corpus(n: int) -> str:
    """Documents of 1-4 lines of varied lengths, separated by blank or whitespace-only lines."""
    docs = ["\n".join(f"doc {d} line {k} " + "w" * ((d * 7 + k * 13) % 90) for k in range(1 + d % 4)) for d in range(n)]
    return "".join(doc + ("\n\n" if d % 3 else "\n  \n\n") for d, doc in enumerate(docs))


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_byte_ranges_give_the_rows_of_the_whole_file(tmp_path, fmt):
    """Any block size, down to 1 byte (a range inside a line, at a line start, on a blank line):
    the ranges' documents together are exactly the whole file's, in order, each once."""
    import json

    body = _corpus(120)
    if fmt == "jsonl":
        body = "".join(json.dumps({"text": d}) + "\n" + ("\n" if i % 4 == 0 else "") for i, d in enumerate(body.split("\n\n")))
    path = tmp_path / f"c.{fmt}"
    path.write_text(body, encoding="utf-8")
    size = path.stat().st_size
    whole = pa.concat_tables(read.read_file(str(path), CFG))
    assert whole.num_rows >= 120
    for block in (1, 7, 64, 333, 4096, size - 1, size):
        cfg = read.ReadConfig(block_bytes=block)
        units = read.plan_units([[str(path), size]], cfg)
        assert len(units) == -(-size // block)
        tables = [t for u in units for t in read.read_shards(u, cfg) if isinstance(t, pa.Table)]
        assert pa.concat_tables(tables).equals(whole), block


def test_a_line_far_larger_than_a_block_is_dropped_and_counted(tmp_path):
    """A 100 MB single line: read in 1 MiB steps (never held), its document dropped and counted;
    the documents around it are kept, and the ranges that start inside it make nothing."""
    path = tmp_path / "long.txt"
    with open(path, "wb") as f:
        f.write(b"before it.\n\nhead line\n")
        for _ in range(100):
            f.write(b"y" * (1 << 20))
        f.write(b"\ntail line\n\nafter it.\n")
    cfg = read.ReadConfig(block_bytes=32 << 20, max_line_bytes=8 << 20)
    units = read.plan_units([[str(path), path.stat().st_size]], cfg)
    assert len(units) == 4
    out = [t for u in units for t in read.read_shards(u, cfg)]
    tables = [t for t in out if isinstance(t, pa.Table)]
    counts = [c for c in out if isinstance(c, dict)]
    assert [t for tab in tables for t in tab.column("text").to_pylist()] == ["before it.", "after it."]
    assert sum(c["dropped_too_large"] for c in counts) == 1 and sum(c["documents"] for c in counts) == 2


@pytest.mark.parametrize("name, pack", [
    ("c.txt.gz", gzip.compress), ("c.txt.bz2", bz2.compress),
    ("c.txt.zst", lambda b: zstandard.ZstdCompressor().compress(b)), ("c.txt", lambda b: b),
])
def test_read_file_compressed_formats(tmp_path, name, pack):
    path = tmp_path / name
    path.write_bytes(pack("Doc one.\n\nDoc two, caf\xc3\xa9 \xff\xfe bad bytes.\n".encode("latin-1")))
    out = pa.concat_tables(read.read_file(str(path), CFG))
    assert out.column("text").to_pylist() == ["Doc one.", "Doc two, café \ufffd\ufffd bad bytes."]


def test_read_jsonl_gz_and_parquet(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x y"}\n{"text": "z"}\n'))
    assert pa.concat_tables(read.read_file(str(tmp_path / "a.jsonl.gz"), CFG)).column("text").to_pylist() == ["x y", "z"]
    pq.write_table(pa.table({"text": ["p", "q"], "n": [1, 2]}), tmp_path / "b.parquet")
    out = pa.concat_tables(read.read_file(str(tmp_path / "b.parquet"), CFG))
    assert out.to_pylist() == [{"doc_id": f"{tmp_path}/b.parquet#000000000000", "text": "p"},
                               {"doc_id": f"{tmp_path}/b.parquet#000000000001", "text": "q"}]
    with pytest.raises(read.ReadError, match="no column 'body'"):
        list(read.read_file(str(tmp_path / "b.parquet"), read.ReadConfig(text_field="body")))


def test_unreadable_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(read.ReadError, match=r"cannot read .*broken.txt.gz"):
        list(read.read_file(str(tmp_path / "broken.txt.gz"), CFG))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        read.run_read(CFG, str(tmp_path / "nothing-*.txt"), str(tmp_path / "root"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read.run_read(CFG, str(tmp_path / "missing.txt"), str(tmp_path / "root"))


def test_run_read_many_files_in_parallel(ray_session, tmp_path, demo_files):
    from pipelines import stage_store

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("Small doc.\n\nAnother one.\n")
    uri = read.run_read(CFG, [str(tmp_path / "in"), *demo_files], str(tmp_path / "root"))
    table = stage_store.read_table(uri)
    ids = table.column("doc_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids) > 4000
    stats = stage_store.read_stats(uri)
    assert stats["files"] == 3 and stats["documents"] == table.num_rows and stats["chars"] > 3_000_000


def test_empty_corpus_is_an_error(ray_session, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="corpus is empty"):
        read.run_read(CFG, str(tmp_path / "empty.txt"), str(tmp_path / "root"))
    assert not any(p.name.startswith("_tmp") for p in (tmp_path / "root" / "read").iterdir())


def test_read_shards_cut_by_rows_or_characters(tmp_path):
    from pipelines.stages.read import ReadConfig, read_shards

    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(f"doc {i} " + "w" * 294 for i in range(5)) + "\n", encoding="utf-8")
    for cfg, sizes in [(ReadConfig(chars_per_shard=500, rows_per_shard=4), [2, 2, 1]),
                       (ReadConfig(chars_per_shard=10**6, rows_per_shard=3), [3, 2]),
                       (ReadConfig(chars_per_shard=10**6, docs_per_batch=2), [5])]:
        *tables, counts = read_shards(str(path), cfg)
        assert [t.num_rows for t in tables] == sizes
        assert counts == {"documents": 5, "chars": 5 * 300, "dropped_too_large": 0, "empty_units": 0, "units_read": 1}
        assert [d for t in tables for d in t.column("doc_id").to_pylist()] == [f"{path}#{i * 302:012d}" for i in range(5)]


@pytest.mark.slow
def test_a_single_200mb_file_is_read_by_many_tasks(ray_session, tmp_path):
    """One 200 MB text file, 16 MiB blocks: 13 read tasks, each reporting; every document once,
    at the byte offset it was written at."""
    from pipelines import stage_store

    path = tmp_path / "big.txt"
    offsets, offset, k = [], 0, 0
    with open(path, "wb") as f:
        while offset < 200 << 20:
            chunk = []
            for _ in range(10_000):
                doc = f"Document {k} says this. " * (3 + k % 40) + "\nIts second line.\n\n"
                offsets.append(offset)
                data = doc.encode("utf-8")
                chunk.append(data)
                offset += len(data)
                k += 1
            f.write(b"".join(chunk))
    cfg = read.ReadConfig(block_bytes=16 << 20, chars_per_shard=8 << 20, rows_per_shard=100_000)
    uri = read.run_read(cfg, str(path), str(tmp_path / "root"))
    stats = stage_store.read_stats(uri)
    assert stats["units"] == stats["units_read"] == -(-offset // (16 << 20)) == 13
    ids = stage_store.read_table(uri, columns=["doc_id"]).column("doc_id").to_pylist()
    assert ids == [f"{path}#{o:012d}" for o in offsets]
    names = [f["name"] for f in stage_store.read_manifest(uri)["files"]]
    assert {n.split("-")[1] for n in names} == {f"{u:05d}" for u in range(13)}  # every task wrote shards


def test_zero_byte_file_among_many_is_counted(ray_session, tmp_path):
    from pipelines import stage_store

    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"f{i}.txt").write_text(f"Doc {i} one.\n\nDoc {i} two.\n")
    (tmp_path / "in" / "f9-empty.txt").write_bytes(b"")
    uri = read.run_read(CFG, str(tmp_path / "in"), str(tmp_path / "root"))
    stats = stage_store.read_stats(uri)
    assert (stats["files"], stats["units"], stats["documents"], stats["empty_units"]) == (4, 4, 6, 1)


def test_gzip_truncated_mid_file_names_it_and_commits_nothing(ray_session, tmp_path):
    import random

    from pipelines import stage_store

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Fine doc.\n\nAnother.\n")
    rng = random.Random(0)  # incompressible enough that half the file is half the stream
    text = "\n\n".join(" ".join(f"w{rng.randrange(10**6)}" for _ in range(50)) for _ in range(20_000))
    packed = gzip.compress(text.encode("utf-8"))
    (tmp_path / "in" / "b.txt.gz").write_bytes(packed[: len(packed) // 2])
    root = tmp_path / "root"
    earlier = read.run_read(CFG, str(tmp_path / "in" / "a.txt"), str(root))  # a finished output stays
    with pytest.raises(Exception, match=r"cannot read .*b\.txt\.gz: EOFError"):
        read.run_read(CFG, str(tmp_path / "in"), str(root))
    assert sorted(os.listdir(root / "read")) == [os.path.basename(earlier)]  # no temp dir, nothing half
    assert stage_store.read_table(earlier).num_rows == 2


def test_unreadable_s3_object_among_many_is_named(ray_session, s3_bucket):
    """Byte ranges of an uncompressed S3 object, plus a corrupt one among them: the error names it."""
    import boto3

    from pipelines import storage

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    bucket = s3_bucket[len("s3://"):]
    body = "".join(f"Doc {i} " + "x" * (i % 50) + "\n\n" for i in range(2000)).encode()
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/ok-{i}.txt", Body=body)
    cfg = read.ReadConfig(block_bytes=4096)
    uri = read.run_read(cfg, f"{s3_bucket}/in/", f"{s3_bucket}/root")
    from pipelines import stage_store

    stats = stage_store.read_stats(uri)
    assert stats["documents"] == 6000 and stats["units"] == 3 * -(-len(body) // 4096)
    s3.put_object(Bucket=bucket, Key="in/bad.txt.gz", Body=b"\x1f\x8b\x08\x00 not gzip at all")
    with pytest.raises(Exception, match=f"cannot read {s3_bucket}/in/bad.txt.gz"):
        read.run_read(cfg, f"{s3_bucket}/in/", f"{s3_bucket}/root")
    assert [f for f in storage.list_files(f"{s3_bucket}/root/read") if "/_tmp-" in f] == []
