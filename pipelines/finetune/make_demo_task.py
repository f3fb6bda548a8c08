"""Build the demo task ``pipelines/demo/task/{train,dev}.tsv`` from real human-labelled sentences.

Source: the movie-review snippets of Hutto & Gilbert (ICWSM 2014), shipped in the ``vaderSentiment``
3.3.2 source distribution on PyPI (``additional_resources/hutto_ICWSM_2014.tar.gz``, MIT licence).
They are the 10,605 Rotten Tomatoes sentences of Pang & Lee (2005), each with the mean of 20 human
sentiment ratings in [-4, 4]. Like SST-2 (built from the same sentences), the task is binary:
label 1 when the mean rating is positive, 0 when negative; sentences rated within 0.5 of neutral
are dropped. Rows go to dev when a hash of the snippet id falls in the dev fraction, so the split
is fixed by the data alone; rows are in hash order, so classes are mixed throughout.

    python -m pipelines.finetune.make_demo_task                  # pip-downloads the sdist
    python -m pipelines.finetune.make_demo_task --sdist vaderSentiment-3.3.2.tar.gz --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile

SDIST = "vaderSentiment==3.3.2"
INNER_TAR = "additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo", "task")


def download_sdist(directory: str) -> str:
    subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
                    "-q", "-d", directory], check=True)
    (name,) = [n for n in os.listdir(directory) if n.endswith(".tar.gz")]
    return os.path.join(directory, name)


def read_snippets(sdist_path: str) -> list[tuple[str, float, str]]:
    """(id, mean rating, sentence) rows from the nested tarball."""
    with tarfile.open(sdist_path) as outer:
        inner_member = next(m for m in outer.getmembers() if m.name.endswith(INNER_TAR))
        inner_bytes = outer.extractfile(inner_member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        text = inner.extractfile(SNIPPETS).read().decode("utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            sid, score, sentence = line.split("\t", 2)
            rows.append((sid, float(score), " ".join(sentence.split())))
    return rows


def split_rows(rows: list[tuple[str, float, str]], dev_fraction: float, neutral_margin: float
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train, dev = [], []
    # The source lists all positive snippets first; ordering by a hash of the id mixes the classes, so
    # the first N rows of either split are a fair sample.
    for sid, score, sentence in sorted(rows, key=lambda r: hashlib.sha1(r[0].encode()).hexdigest()):
        if abs(score) < neutral_margin or not sentence:
            continue
        bucket = int(hashlib.sha1(sid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (dev if bucket < dev_fraction else train).append((sentence, "1" if score > 0 else "0"))
    return train, dev


def write_tsv(path: str, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        f.writelines(f"{s}\t{y}\n" for s, y in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", help="vaderSentiment-3.3.2.tar.gz (downloaded with pip when omitted)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--dev-fraction", type=float, default=0.12)
    parser.add_argument("--neutral-margin", type=float, default=0.5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = read_snippets(args.sdist or download_sdist(tmp))
    train, dev = split_rows(rows, args.dev_fraction, args.neutral_margin)
    os.makedirs(args.out, exist_ok=True)
    write_tsv(os.path.join(args.out, "train.tsv"), train)
    write_tsv(os.path.join(args.out, "dev.tsv"), dev)
    print(f"{len(rows)} snippets -> train {len(train)}, dev {len(dev)} in {args.out}")


if __name__ == "__main__":
    main()
