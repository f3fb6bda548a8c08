"""How a multiple-choice file reads: which fields make the context, the choices and the label."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ChoiceSpec:
    """One multiple-choice task's files and fields. A field may be a dotted path into a JSON object
    (``question.stem``); CSV fields are header names."""

    name: str
    """Task name; also the results-table row."""
    context: tuple[str, ...]
    """Fields joined with a space into the context (sentence A)."""
    num_choices: int
    """Choices per question; a row with another number is an error naming file:line."""
    choices: tuple[str, ...] = ()
    """One field per choice (SWAG's ending0..3, COPA's choice1/choice2) ..."""
    choice_list: str = ""
    """... or one field holding the list of choices: strings, or objects with a ``text`` (and a ``label``)."""
    choice_prefix: str = ""
    """A field put before every choice (SWAG's sent2, the start of the continuation)."""
    cue_field: str = ""
    """A field whose value picks a sentence added after the context (COPA's question)."""
    cues: tuple[tuple[str, ...], ...] = ()
    """(value of ``cue_field``, sentence) pairs, e.g. ("cause", "What was the cause?")."""
    label: str = "label"
    """The field naming the right choice."""
    label_values: tuple[str, ...] = ()
    """Label strings in choice order (A..E); empty: the label is the choice's 0-based index. Choices given
    as objects with a ``label`` are matched by that label."""
    file_format: Literal["jsonl", "csv"] = "jsonl"
    train_file: str = "train.jsonl"
    dev_file: str = "dev.jsonl"
    allow_duplicate_choices: bool = False
    """Keep questions that repeat a choice text (default: a bad row, since the repeated choices cannot be told
    apart; CommonsenseQA has 122 such train and 24 such dev questions)."""

    def __post_init__(self) -> None:
        if not self.name or not self.context:
            raise ValueError(f"ChoiceSpec {self.name!r}: name and context must be set")
        if self.num_choices < 2:
            raise ValueError(f"ChoiceSpec {self.name}: num_choices must be >= 2, got {self.num_choices}")
        if bool(self.choices) == bool(self.choice_list):
            raise ValueError(f"ChoiceSpec {self.name}: set exactly one of choices (one field each) and choice_list")
        if self.choices and len(self.choices) != self.num_choices:
            raise ValueError(f"ChoiceSpec {self.name}: {len(self.choices)} choice fields but num_choices "
                             f"{self.num_choices}")
        if self.label_values and len(self.label_values) != self.num_choices:
            raise ValueError(f"ChoiceSpec {self.name}: label_values needs one value per choice ({self.num_choices})")
        if any(len(pair) != 2 for pair in self.cues) or bool(self.cues) != bool(self.cue_field):
            raise ValueError(f"ChoiceSpec {self.name}: cues are [value, sentence] pairs, given with cue_field")


MC_TASKS: dict[str, ChoiceSpec] = {s.name: s for s in (
    # rowanz/swagaf data/{train,val}.csv; the paper's (and transformers' run_swag) pairing
    ChoiceSpec("swag", context=("sent1",), choice_prefix="sent2", choices=tuple(f"ending{i}" for i in range(4)),
               num_choices=4, file_format="csv", train_file="train.csv", dev_file="val.csv"),
    ChoiceSpec("commonsenseqa", context=("question.stem",), choice_list="question.choices", label="answerKey",
               label_values=("A", "B", "C", "D", "E"), num_choices=5, train_file="train_rand_split.jsonl",
               dev_file="dev_rand_split.jsonl"),
    ChoiceSpec("copa", context=("premise",), cue_field="question",
               cues=(("cause", "What was the cause?"), ("effect", "What was the effect?")),
               choices=("choice1", "choice2"), num_choices=2, train_file="train.jsonl", dev_file="val.jsonl"),
)}
"""The multiple-choice tasks known by name; their folders are ``{name}_root`` in ``FinetuneConfig``."""
