"""SQuAD pipeline on tiny hand-written v1.1 and v2.0 files."""
import json

import numpy as np
import pytest

from pipelines.finetune import squad
from pipelines.finetune.glue import BadRowError
from pipelines.finetune.squad import SquadParams
from pipelines.finetune.train import HyperParams, load_tokenizer

CONTEXT = ("Super Bowl 50 was an American football game to determine the champion of the National Football "
           "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
           "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third "
           "Super Bowl title. The game was played on February 7, 2016, at Levi's Stadium in Santa Clara, California.")


def qa(qid, question, answer=None, impossible=False, start=None):
    answers = [] if answer is None else [{"text": answer, "answer_start": CONTEXT.index(answer) if start is None else start}]
    out = {"id": qid, "question": question, "answers": answers}
    if impossible:
        out["is_impossible"] = True
    return out


V11 = {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [{"context": CONTEXT, "qas": [
    qa("q1", "Which NFL team won Super Bowl 50?", "Denver Broncos"),
    qa("q2", "Where was the game played?", "Levi's Stadium"),
    qa("q3", "When was the game played?", "February 7, 2016"),
]}, {"context": "   ", "qas": [qa("q4", "Empty?")]}]}]}

V20 = {"version": "v2.0", "data": [{"title": "Super_Bowl_50", "paragraphs": [{"context": CONTEXT, "qas": [
    qa("q1", "Which NFL team won Super Bowl 50?", "Denver Broncos"),
    qa("q5", "Who lost Super Bowl 49?", impossible=True),
    qa("q6", "What was the score?", "24–10", start=5),  # wrong answer_start
]}]}]}


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return load_tokenizer(minilm_dir)


def write_json(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def test_read_counts_empty_context_and_bad_answer_start(tmp_path):
    examples, report = squad.read_squad(write_json(tmp_path, "dev-v1.1.json", V11))
    assert [e.qid for e in examples] == ["q1", "q2", "q3"] and report.bad == {"empty context": 1}
    examples, report = squad.read_squad(write_json(tmp_path, "dev-v2.0.json", V20))
    assert [e.is_impossible for e in examples] == [False, True, False]
    assert report.bad == {"answer text not at answer_start": 1} and not examples[2].answer_ok
    with pytest.raises(BadRowError, match="question q6: answer text not at answer_start"):
        squad.read_squad(write_json(tmp_path, "x.json", V20), on_bad_row="raise")


def test_windows_map_answer_spans_back_to_text(tmp_path, tok):
    examples, _ = squad.read_squad(write_json(tmp_path, "train.json", V11))
    params = SquadParams(doc_stride=16, max_query_length=6)
    feats = squad.build_features(examples, tok, params, max_seq_length=48, training=True)
    assert len(feats.input_ids) > len(examples)  # several windows per question
    assert all(len(ids) <= 48 for ids in feats.input_ids)
    found = {}
    for f, ex_i in enumerate(feats.example_index):
        ids = feats.input_ids[f]
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        q_len = ids.index(tok.sep_id) - 1
        assert q_len <= 6  # question cut to max_query_length
        s, e = feats.start_positions[f], feats.end_positions[f]
        if s == 0:
            assert e == 0
            continue
        text = examples[ex_i].context[feats.offsets[f][s][0]:feats.offsets[f][e][1]]
        found.setdefault(examples[ex_i].qid, set()).add(text)
    assert found == {"q1": {"Denver Broncos"}, "q2": {"Levi's Stadium"}, "q3": {"February 7, 2016"}}


def test_each_context_token_has_exactly_one_max_context_window(tmp_path, tok):
    examples, _ = squad.read_squad(write_json(tmp_path, "dev.json", V11))
    feats = squad.build_features(examples[:1], tok, SquadParams(doc_stride=10), max_seq_length=40, training=False)
    owners = {}
    for f in range(len(feats.input_ids)):
        for t, (off, best) in enumerate(zip(feats.offsets[f], feats.max_context[f])):
            if off is not None and best:
                assert off not in owners
                owners[off] = f
    assert len(owners) == len(tok.tokenizer.encode(CONTEXT, add_special_tokens=False).ids)


def peaked_logits(feats, f, s, e, n, base=-5.0):
    starts, ends = [np.full(len(ids), base) for ids in feats.input_ids], [np.full(len(ids), base) for ids in feats.input_ids]
    starts[f][s], ends[f][e] = 5.0, 5.0
    return starts, ends


def test_decoding_returns_original_text_and_respects_max_answer_length(tmp_path, tok):
    examples, _ = squad.read_squad(write_json(tmp_path, "dev.json", V11))
    examples = examples[:1]
    feats = squad.build_features(examples, tok, SquadParams(), max_seq_length=128, training=False)
    train_feats = squad.build_features(examples, tok, SquadParams(), max_seq_length=128, training=True)
    s, e = train_feats.start_positions[0], train_feats.end_positions[0]
    starts, ends = peaked_logits(feats, 0, s, e, 1)
    texts, diffs = squad.decode_predictions(examples, feats, starts, ends, SquadParams())
    assert texts == {"q1": "Denver Broncos"} and diffs["q1"] < 0
    texts, _ = squad.decode_predictions(examples, feats, starts, ends, SquadParams(max_answer_length=1))
    assert texts["q1"] != "Denver Broncos"


def test_v2_threshold_tuned_on_dev():
    texts = {"a": "Denver Broncos", "b": "Carolina", "c": "Paris"}
    golds = {"a": ["Denver Broncos"], "b": [], "c": []}
    diffs = {"a": -3.0, "b": 1.0, "c": 2.0}
    t, best_f1 = squad.best_null_threshold(texts, diffs, golds)
    assert -3.0 <= t < 1.0 and best_f1 == pytest.approx(100.0)
    assert squad.apply_null_threshold(texts, diffs, t) == {"a": "Denver Broncos", "b": "", "c": ""}
    # everything answerable: never predict null
    t, _ = squad.best_null_threshold(texts, {"a": 5.0, "b": 6.0, "c": 7.0}, {q: ["x"] for q in texts} | {"a": ["Denver Broncos"]})
    assert t >= 5.0 or t == pytest.approx(5.0)


@pytest.mark.slow
@pytest.mark.parametrize("version,data", [("v1.1", V11), ("v2.0", V20)])
def test_finetune_squad_end_to_end(tmp_path, minilm_dir, version, data):
    write_json(tmp_path, f"train-{version}.json", data)
    write_json(tmp_path, f"dev-{version}.json", data)
    hp = HyperParams(learning_rate=1e-4, num_epochs=2, batch_size=8, max_seq_length=64, warmup_ratio=0.0)
    out = str(tmp_path / "out")
    result = squad.finetune_squad(SquadParams(version=version, doc_stride=32), str(tmp_path), minilm_dir, hp, out)
    assert 0.0 <= result["dev"][f"squad_{version}"]["f1"] <= 100.0
    preds = json.load(open(f"{out}/predictions.json"))
    assert set(preds) == {e["id"] for p in data["data"][0]["paragraphs"] for e in p["qas"]} - {"q4"}
    assert result["data_reports"][0]["num_bad"] == 1
    if version == "v2.0":
        v2 = result["dev"]["squad_v2.0"]
        assert "null_threshold" in v2 and v2["null_threshold_tuned_on_dev"] == 1.0
        assert {"exact_match_at_threshold_0", "f1_at_threshold_0"} <= set(v2)


def gold_pointing_logits(train_feats):
    """Per window, start/end logits peaked on the gold span build_features labelled (or [CLS] when the
    window does not hold the whole first gold answer): the decoder's input from a perfect model."""
    starts, ends = [], []
    for ids, s, e in zip(train_feats.input_ids, train_feats.start_positions, train_feats.end_positions):
        start, end = np.zeros(len(ids), np.float32), np.zeros(len(ids), np.float32)
        start[s], end[e] = 10.0, 10.0
        starts.append(start)
        ends.append(end)
    return starts, ends


def test_gold_pointing_logits_score_on_the_real_v11_dev_file(shared_data, tok):
    """Windowing (384 tokens, stride 128), char offsets, max-context and answer normalisation on all
    10,570 real questions. What is left is only answers that start or end inside a word piece, e.g.
    gold '8' in '18', 'ten' in 'contenders': a token-level span cannot cut them (32 questions)."""
    examples, report = squad.read_squad(f"{shared_data}/squad_v1.1/dev-v1.1.json")
    assert len(examples) == 10570 and report.num_bad == 0
    params = SquadParams()
    train_feats = squad.build_features(examples, tok, params, max_seq_length=384, training=True)
    feats = squad.build_features(examples, tok, params, max_seq_length=384, training=False)
    assert feats.input_ids == train_feats.input_ids and len(feats.input_ids) == 10833  # same windows, 263 extra
    starts, ends = gold_pointing_logits(train_feats)
    scores, texts, _ = squad.evaluate_squad(examples, feats, starts, ends, params)
    assert scores["total"] == 10570
    assert scores["exact_match"] == pytest.approx(100 * 10538 / 10570, abs=1e-9)  # 99.697
    assert scores["f1"] == pytest.approx(99.76585301991557, abs=1e-9)
    assert scores["exact_match"] >= 99.0 and scores["f1"] >= 99.5
    by_id = {e.qid: e for e in examples}
    assert texts["56be4db0acb8001400a502f0"] == "golden" and by_id["56be4db0acb8001400a502f0"].answers[0][0] == "gold"
