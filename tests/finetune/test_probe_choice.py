"""Frozen features for multiple choice (``features.choices_table`` -> ``probe.group_choices`` ->
``probe.train_choice_scorer``) and which probe a task gets (``probe.probe_kind``: SQuAD refused)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pipelines.finetune import features as F
from pipelines.finetune import probe as P
from pipelines.finetune.multiple_choice.read import ChoiceExample

HAND = [ChoiceExample("f.jsonl:10", "The man broke his toe.", ("He dropped a hammer on his foot.", "He got a hole in his sock."), 0),
        ChoiceExample("f.jsonl:2", "I poured water on the fire.", ("The fire grew.", "The fire went out."), 1),
        ChoiceExample("f.jsonl:3", "The sun rose.", ("It got light.", "It got dark."), 0)]


def _features(table, dim=3):
    """Fake pooled features, sorted as the features stage writes them: row r's vector is r + [0, 0.1, 0.2]."""
    table = F.check_input(table)
    feats = np.arange(table.num_rows, dtype=np.float32)[:, None] + np.arange(dim, dtype=np.float32) / 10
    return table["id"].to_pylist(), table["label"].to_numpy(), feats


def test_choice_rows_go_back_together_per_question_in_choice_order():
    table = F.choices_table(HAND)
    assert table.num_rows == 6 and table["id"].to_pylist()[:2] == ["f.jsonl:10#00", "f.jsonl:10#01"]
    assert table["text_a"].to_pylist()[1] == HAND[0].context and table["text_b"].to_pylist()[1] == HAND[0].choices[1]
    assert table["label"].to_pylist() == [1, 0, 0, 1, 1, 0]
    ids, labels, feats = _features(table)
    assert ids == ["f.jsonl:10#00", "f.jsonl:10#01", "f.jsonl:2#00", "f.jsonl:2#01", "f.jsonl:3#00", "f.jsonl:3#01"]
    qids, x, y = P.group_choices(ids, labels, feats)
    assert qids == ["f.jsonl:10", "f.jsonl:2", "f.jsonl:3"] and x.shape == (3, 2, 3)
    assert y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(x[1, 1], feats[3])  # f.jsonl:2's second choice
    # unlabelled questions (test files) group with -1
    _, _, y_unknown = P.group_choices(ids, np.full(6, -1), feats)
    assert y_unknown.tolist() == [-1, -1, -1]


def test_group_choices_names_the_bad_question():
    ids, labels, feats = _features(F.choices_table(HAND))
    with pytest.raises(ValueError, match=r"question 'f.jsonl:3' has 1 choices"):
        P.group_choices(ids[:5], labels[:5], feats[:5])
    two_right = labels.copy()
    two_right[1] = 1
    with pytest.raises(ValueError, match=r"question 'f.jsonl:10': 2 choices labelled right"):
        P.group_choices(ids, two_right, feats)
    none_right = labels.copy()
    none_right[3] = 0
    with pytest.raises(ValueError, match=r"question 'f.jsonl:2': 0 choices labelled right"):
        P.group_choices(ids, none_right, feats)
    with pytest.raises(ValueError, match=r"feature row 'x': not a choice row"):
        P.group_choices(["x"] + ids[1:], labels, feats)
    with pytest.raises(ValueError, match=r"'f.jsonl:10#01': not a choice row"):  # out of choice order
        P.group_choices(ids[1:2] + ids[:1] + ids[2:], labels, feats)


def test_scorer_learns_a_planted_direction_is_seeded_and_scores_choices_alike():
    rng = np.random.default_rng(0)
    N, C, D = 200, 4, 16
    x = rng.normal(size=(N, C, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    x[np.arange(N), y, 0] += 3.0  # the right choice stands out along feature 0
    cfg = P.ProbeConfig(num_epochs=30, learning_rate=1e-2, seed=1)
    model = P.train_choice_scorer(x[:150], y[:150], cfg)
    assert (P.predict_choices(model, x[150:]) == y[150:]).mean() >= 0.9
    again = P.train_choice_scorer(x[:150], y[:150], cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # one shared scorer: permuting a question's choices permutes its scores
    with torch.no_grad():
        scores = model(torch.from_numpy(x[150:]))
        perm = [2, 0, 3, 1]
        torch.testing.assert_close(model(torch.from_numpy(x[150:, perm])), scores[:, perm])
    with pytest.raises(ValueError, match=r"labels in \[0, 3\], expected \[0, 2\)"):
        P.train_choice_scorer(x[:, :2], y, cfg)
    with pytest.raises(ValueError, match=r"want \(N, C, D\)"):
        P.train_choice_scorer(x[:, 0], y, cfg)


def test_real_copa_pairs_give_the_fine_tuning_encoding_and_its_cls(shared_data, minilm_dir):
    from pipelines.finetune.multiple_choice import MC_TASKS
    from pipelines.finetune.multiple_choice.read import read_choices
    from pipelines.finetune.multiple_choice.task import encode_choices

    path = os.path.join(shared_data, "superglue", "COPA", "val.jsonl")
    if not os.path.isfile(path):
        pytest.skip(f"COPA not found at {path}")
    examples, _ = read_choices(path, MC_TASKS["copa"])
    examples = examples[:12]
    model, tok = F.load_encoder(minilm_dir, "")
    cfg = F.FeatureConfig(layers=(-1,), pooling="cls")
    table = F.check_input(F.choices_table(examples))
    out = F.extract_batch(table, model, F.truncating_tokenizer(tok, cfg.max_seq_length), cfg, tok.pad_id)
    ids, labels = out["id"].to_pylist(), out["label"].to_numpy()
    feats = out["features"].combine_chunks().flatten().to_numpy().reshape(out.num_rows, -1)
    qids, x, y = P.group_choices(ids, labels, feats)
    by_guid = {e.guid: e for e in examples}
    assert x.shape == (12, 2, 384) and y.tolist() == [by_guid[q].label for q in qids]
    # the same [CLS] context [SEP] choice [SEP] ids the fine-tuning path feeds BertForMultipleChoice
    pairs = encode_choices(tok, [by_guid[q] for q in qids], 2, cfg.max_seq_length).pairs
    encoded = F.encode_text(F.truncating_tokenizer(tok, cfg.max_seq_length), table, "cls")
    assert [e.input_ids for e in encoded] == pairs.input_ids
    assert [e.token_type_ids for e in encoded] == pairs.token_type_ids
    # each row is the last layer's [CLS] of that pair, alone
    q = qids[5]
    ids_, types = pairs.input_ids[11], pairs.token_type_ids[11]  # question 5, choice 1
    with torch.no_grad():
        cls = model.hidden_states(torch.tensor([ids_]), torch.tensor([types]), torch.ones(1, len(ids_), dtype=torch.long))
    np.testing.assert_allclose(x[5, 1], cls[-1][0, 0].numpy(), atol=1e-5)
    assert by_guid[q].choices[1] in table["text_b"].to_pylist()
    scorer = P.train_choice_scorer(x, y, P.ProbeConfig(num_epochs=50, seed=0))
    assert (P.predict_choices(scorer, x) == y).mean() >= 0.9  # 12 questions, 384 features: it fits them


def test_probe_kind_per_task_and_squad_refused():
    from pipelines.finetune.config import TaskJob
    from pipelines.finetune.multiple_choice.spec import ChoiceSpec

    assert [P.probe_kind(t) for t in ("rte", "sst2", "conll2003", "copa", "commonsenseqa", "swag")] == [
        "classifier", "classifier", "tagger", "choice", "choice", "choice"]
    custom = TaskJob(name="my_mc", multiple_choice=ChoiceSpec("my_mc", context=("q",), choices=("a", "b"), num_choices=2))
    assert P.probe_kind(custom) == "choice"
    for name in ("squad_v1", "squad_v2"):
        with pytest.raises(ValueError, match=rf"task '{name}': the feature-based setting is not supported for span "
                                             r"tasks .*\(section 5.3\) is NER only"):
            P.probe_kind(name)
    with pytest.raises(ValueError, match="neither a GLUE task"):
        P.probe_kind("no_such_task")
