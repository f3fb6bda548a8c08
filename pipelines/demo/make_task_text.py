"""Build ``pipelines/demo/task_text/movie-train.txt.gz``: the demo task's *training* sentences as unlabelled
pretraining text, in BERT's corpus format (one paragraph per line, a blank line between documents).

Why: the demo pretrains for a minute or two. On the Python documentation alone the model learns words
the movie reviews rarely use, and its WordPiece vocabulary splits review words into pieces; pretraining on
the task's own unlabelled text as well (task-adaptive pretraining, Gururangan et al., 2020) is what lets a
model this small and this briefly trained beat random init. Only ``train.tsv`` goes in, never ``dev.tsv``:
the dev accuracy stays a held-out figure. Labels are dropped.

The snippets are independent sentences (in the hash order of ``train.tsv``), grouped ``PER_DOCUMENT`` to a
document so that the clean stage's ``min_chars`` keeps them; next-sentence pairs inside such a document are
unrelated sentences, which only makes NSP noisier. Deterministic (no timestamp in the gzip header).

    python -m pipelines.demo.make_task_text
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import os

HERE = os.path.dirname(os.path.abspath(__file__))
PER_DOCUMENT = 8


def documents(train_tsv: str, per_document: int = PER_DOCUMENT) -> list[list[str]]:
    with open(train_tsv, encoding="utf-8", newline="") as f:
        sentences = [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    sentences = [s for s in sentences if s]
    return [sentences[i:i + per_document] for i in range(0, len(sentences), per_document)]


def write(docs: list[list[str]], path: str) -> None:
    text = "\n\n".join("\n".join(doc) for doc in docs) + "\n"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=os.path.join(HERE, "task", "train.tsv"))
    ap.add_argument("--out", default=os.path.join(HERE, "task_text", "movie-train.txt.gz"))
    args = ap.parse_args(argv)
    docs = documents(args.train)
    write(docs, args.out)
    print(f"{sum(map(len, docs))} sentences in {len(docs)} documents -> {args.out}")


if __name__ == "__main__":
    main()
