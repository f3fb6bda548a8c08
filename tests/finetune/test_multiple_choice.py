"""Multiple choice (SWAG's recipe): readers on tiny files of each official layout, bad rows, the head
against transformers' BertForMultipleChoice on the real checkpoint, and the real CommonsenseQA/COPA files."""
import json

import numpy as np
import pytest
import torch

from pipelines.finetune.glue import BadRowError
from pipelines.finetune.multiple_choice import MC_TASKS, ChoiceSpec, read_choices
from pipelines.finetune.multiple_choice.read import ChoiceCountError
from pipelines.finetune.multiple_choice.task import choice_batch, encode_choices, multiple_choice_model
from pipelines.finetune.train import load_tokenizer

SWAG_CSV = (
    ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    '0,anetv_1,5,"Members of the procession walk down the street. The people","Members of the procession walk '
    'down the street.","The people",gold,are playing drums.,"sit down, tired.",fly away.,swim.,0\n'
    "1,lsmdc_2,7,He drives. The car,He drives.,The car,gen,stops.,,turns.,sings.,1\n"
    "2,lsmdc_3,9,She runs. Her dog,She runs.,Her dog,gen,barks.,sleeps.,eats.,jumps.,4\n")


def csqa_row(key, texts, stem="Where would you put a plate?"):
    return {"answerKey": key, "id": "x", "question": {"question_concept": "plate", "stem": stem,
            "choices": [{"label": lab, "text": t} for lab, t in zip("ABCDE", texts)]}}


def write_lines(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_swag_csv_pairs_sent1_with_sent2_plus_each_ending(tmp_path):
    path = tmp_path / "val.csv"
    path.write_text(SWAG_CSV, encoding="utf-8")
    examples, report = read_choices(str(path), MC_TASKS["swag"])
    assert [(e.guid, e.context, e.choices, e.label) for e in examples] == [
        (f"{path}:2", "Members of the procession walk down the street.",
         ("The people are playing drums.", "The people sit down, tired.", "The people fly away.", "The people swim."), 0)]
    assert report.bad == {"missing choice": 1, "label names no choice": 1}
    assert report.samples == [f"{path}:3: missing choice: ending1", f"{path}:4: label names no choice: label '4'"]
    with pytest.raises(BadRowError, match=r"val\.csv:3: missing choice: ending1"):
        read_choices(str(path), MC_TASKS["swag"], on_bad_row="raise")


def test_commonsenseqa_label_by_choice_label_and_bad_rows(tmp_path):
    rows = [csqa_row("C", ["floor", "roof", "table", "sky", "river"]),
            csqa_row("B", ["floor", "table", "table", "sky", "river"]),  # a repeated choice (146 in the real files)
            csqa_row("F", ["floor", "roof", "table", "sky", "river"]),
            "{not json"]
    path = write_lines(tmp_path, "dev_rand_split.jsonl", rows)
    examples, report = read_choices(path, MC_TASKS["commonsenseqa"])
    assert [(e.context, e.choices, e.label) for e in examples] == [
        ("Where would you put a plate?", ("floor", "roof", "table", "sky", "river"), 2)]
    assert report.bad == {"duplicated choice text": 1, "label names no choice": 1, "not a JSON object": 1}
    assert report.samples[1] == f"{path}:3: label names no choice: answerKey 'F'"
    allowing = ChoiceSpec(**{**MC_TASKS["commonsenseqa"].__dict__, "allow_duplicate_choices": True})
    assert [e.label for e in read_choices(path, allowing)[0]] == [2, 1]


def test_a_row_with_another_number_of_choices_is_an_error_naming_file_line_and_field(tmp_path):
    path = write_lines(tmp_path, "train.jsonl", [csqa_row("A", ["a", "b", "c", "d", "e"]), csqa_row("A", ["a", "b", "c", "d"])])
    with pytest.raises(ChoiceCountError, match=r"train\.jsonl:2: field 'question\.choices' has 4 choices, task "
                                               r"commonsenseqa has 5"):
        read_choices(path, MC_TASKS["commonsenseqa"])  # even when bad rows are only counted


def test_copa_adds_the_cause_or_effect_question_to_the_premise(tmp_path):
    rows = [{"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
             "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0},
            {"premise": "My body cast a shadow.", "choice1": "The sun was rising.", "choice2": "The grass was cut.",
             "question": "why", "label": 0, "idx": 1},
            {"premise": "P.", "choice1": "a", "choice2": "b", "question": "cause", "label": 2, "idx": 2}]
    examples, report = read_choices(write_lines(tmp_path, "val.jsonl", rows), MC_TASKS["copa"])
    assert [(e.context, e.choices, e.label) for e in examples] == [
        ("The man turned on the faucet. What was the effect?",
         ("The toilet filled with water.", "Water flowed from the spout."), 1)]
    assert report.bad == {"unknown cue": 1, "label names no choice": 1}


def test_a_spec_reads_any_other_multiple_choice_file(tmp_path):
    spec = ChoiceSpec("quiz", context=("q",), choices=("x", "y", "z"), num_choices=3, label="gold",
                      label_values=("x", "y", "z"))
    path = write_lines(tmp_path, "dev.jsonl", [{"q": "2 + 2?", "x": "3", "y": "4", "z": "5", "gold": "y"}])
    assert [(e.context, e.choices, e.label) for e in read_choices(path, spec)[0]] == [("2 + 2?", ("3", "4", "5"), 1)]
    with pytest.raises(ValueError, match="exactly one of choices"):
        ChoiceSpec("bad", context=("q",), num_choices=2)


def test_real_commonsenseqa_and_copa_files_read_with_their_official_counts(shared_data):
    counts = {}
    for name, folder in (("commonsenseqa", "commonsenseqa"), ("copa", "superglue/COPA")):
        spec = MC_TASKS[name]
        for f in (spec.train_file, spec.dev_file):
            examples, report = read_choices(f"{shared_data}/{folder}/{f}", spec, )
            counts[f] = (report.num_rows, len(examples), dict(report.bad))
    assert counts == {"train_rand_split.jsonl": (9741, 9619, {"duplicated choice text": 122}),
                      "dev_rand_split.jsonl": (1221, 1197, {"duplicated choice text": 24}),
                      "train.jsonl": (400, 400, {}), "val.jsonl": (100, 100, {})}


def test_head_equals_transformers_bert_for_multiple_choice(minilm_dir):
    """The real checkpoint, the same (random) head weights, real text of uneven lengths with padding."""
    from transformers import BertForMultipleChoice

    from pipelines.finetune.multiple_choice import ChoiceExample

    torch.manual_seed(0)
    theirs = BertForMultipleChoice.from_pretrained(minilm_dir).eval()
    ours = multiple_choice_model(minilm_dir).eval()
    with torch.no_grad():
        ours.classifier.weight.copy_(theirs.classifier.weight)
        ours.classifier.bias.copy_(theirs.classifier.bias)
    tok = load_tokenizer(minilm_dir)
    examples = [ChoiceExample("a", "The man turned on the faucet. What was the effect?",
                              ("The toilet filled with water.", "Water flowed from the spout of the kitchen sink."), 1),
                ChoiceExample("b", "My body cast a shadow over the grass. What was the cause?",
                              ("The sun was rising.", "The grass was cut."), 0)]
    batch = choice_batch(encode_choices(tok, examples, 2, 64), [0, 1], tok.pad_id)
    assert batch["input_ids"].shape[:2] == (2, 2) and (batch["attention_mask"] == 0).any()
    ids = batch["input_ids"][0, 0][batch["attention_mask"][0, 0].bool()].tolist()
    assert ids[0] == tok.cls_id and ids.count(tok.sep_id) == 2 and ids[-1] == tok.sep_id
    with torch.no_grad():
        loss, logits = ours(**batch)
        ref = theirs(**batch)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=0)
    assert float((logits - ref.logits).abs().max()) < 1e-5


def test_pairs_are_cls_context_sep_choice_sep_padded_per_batch(minilm_dir):
    from pipelines.finetune.multiple_choice import ChoiceExample

    tok = load_tokenizer(minilm_dir)
    examples = [ChoiceExample("a", "the cat", ("dog", "the dog sat"), 1), ChoiceExample("b", "a cat", ("sat", "ran"), 0)]
    enc = encode_choices(tok, examples, 2, 128)
    # [CLS]=101 the=1996 cat=4937 [SEP]=102 dog=3899 sat=2938 a=1037 ran=2743
    assert enc.pairs.input_ids == [[101, 1996, 4937, 102, 3899, 102], [101, 1996, 4937, 102, 1996, 3899, 2938, 102],
                                   [101, 1037, 4937, 102, 2938, 102], [101, 1037, 4937, 102, 2743, 102]]
    assert enc.pairs.token_type_ids[1] == [0, 0, 0, 0, 1, 1, 1, 1] and enc.labels.tolist() == [1, 0]
    batch = choice_batch(enc, [1, 0], tok.pad_id)
    assert batch["input_ids"].shape == (2, 2, 8) and batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"].sum(-1).tolist() == [[6, 6], [6, 8]]
    assert [len(ids) for ids in encode_choices(tok, examples[:1], 2, 7).pairs.input_ids] == [6, 7]  # longest-first cut
