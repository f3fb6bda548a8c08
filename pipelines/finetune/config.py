"""The fine-tuning config and its task tables, torch-free: what a run's ``finetune`` section holds
(``FinetuneConfig``, one ``TaskJob`` per task with its ``HyperParams``), which tasks are known by name,
where a task's data is read from and where its results go. Planning a run imports this, never torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pipelines import storage
from pipelines.finetune import glue
from pipelines.finetune.conll import ConllParams
from pipelines.finetune.multiple_choice.spec import MC_TASKS, ChoiceSpec
from pipelines.finetune.squad.params import SquadParams
from pipelines.identity import identity_data
from pipelines.typed_config import config_hash

SQUAD_TASKS = {"squad_v1": "v1.1", "squad_v2": "v2.0"}
NER_TASKS = {"conll2003": ConllParams()}
"""Token-classification tasks by name; any other name with ``ner`` set is one too."""


@dataclass(frozen=True)
class HyperParams:
    """One fine-tuning run's hyper-parameters (defaults: the paper's recipe, mid-grid learning rate)."""

    learning_rate: float = 3e-5
    """Peak AdamW learning rate; the paper's grid is {5e-5, 4e-5, 3e-5, 2e-5}."""
    batch_size: int = 32
    num_epochs: int = 3
    warmup_ratio: float = 0.1
    """Fraction of optimizer steps spent warming up linearly from 0."""
    weight_decay: float = 0.01
    """Decoupled weight decay on every weight except biases and LayerNorm."""
    max_grad_norm: float = 1.0
    max_seq_length: int = 128
    """Tokens per packed example, [CLS]/[SEP] included; longer inputs are truncated longest-first."""
    eval_batch_size: int = 128
    seed: int = 42
    """Seeds the head initialisation, dropout and the shuffling order."""
    max_train_examples: int = 0
    """Use only the first N training rows (0 = all); for smoke runs."""
    max_eval_examples: int = 0
    """Evaluate on the first N rows of each dev set (0 = all)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocast for the forward pass (GPU); fp32 everywhere else."""

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.num_epochs < 1:
            raise ValueError(f"HyperParams: learning_rate, batch_size and num_epochs must be positive: {self}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"HyperParams.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_seq_length < 8:
            raise ValueError(f"HyperParams.max_seq_length must be >= 8, got {self.max_seq_length}")


@dataclass(frozen=True)
class TaskJob:
    """One task to fine-tune: which data, which hyper-parameters, which resources."""

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("num_cpus", "num_gpus")
    """Resources: not part of any identity (``pipelines.identity.identity_data``)."""

    name: str
    """A GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad_v1, squad_v2, conll2003 (NER),
    swag, commonsenseqa, copa (multiple choice), or a custom name together with ``spec`` (GLUE format),
    ``ner`` (CoNLL format) or ``multiple_choice``."""
    data_uri: str = ""
    """Folder of the task's files; default ``{glue_root}/{GLUE dir}``, ``squad_root``, ``conll_root`` or
    ``{name}_root`` (swag, commonsenseqa, copa)."""
    spec: glue.TaskSpec | None = None
    """Reading/scoring rules of a custom GLUE-format task (the GLUE tasks have theirs built in)."""
    hyper_params: HyperParams = field(default_factory=HyperParams)
    learning_rates: tuple[float, ...] = ()
    """Optional sweep (e.g. the paper's 5e-5, 4e-5, 3e-5, 2e-5); the best dev score is kept.
    Empty: ``hyper_params.learning_rate`` only."""
    squad: SquadParams | None = None
    """SQuAD windowing/decoding; defaults follow the task name when it is squad_v1/squad_v2."""
    ner: ConllParams | None = None
    """Token classification on CoNLL-format files (scheme, entity types, file names); conll2003 defaults to IOB2."""
    multiple_choice: ChoiceSpec | None = None
    """Multiple choice (``pipelines.finetune.multiple_choice``): how a custom task's files read; swag,
    commonsenseqa and copa have theirs built in."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    """Fraction of a GPU (e.g. 0.25 puts four tasks on one card)."""
    scratch_baseline: bool = False
    """Also fine-tune the same shape from random init, with the best learning rate's hyper-parameters
    (GLUE-format tasks): the results table's from-scratch row, which shows what pretraining bought."""

    def __post_init__(self) -> None:
        if self.scratch_baseline and (self.is_squad or self.is_ner or self.is_multiple_choice):
            raise ValueError(f"task {self.name!r}: scratch_baseline is for GLUE-format tasks, not SQuAD, NER or "
                             f"multiple choice")
        if (self.spec is None and self.ner is None and self.multiple_choice is None and self.name not in glue.GLUE_TASKS
                and self.name not in SQUAD_TASKS and self.name not in NER_TASKS and self.name not in MC_TASKS):
            raise ValueError(f"task {self.name!r} is neither a GLUE task ({', '.join(glue.GLUE_TASKS)}), "
                             f"squad_v1/squad_v2, conll2003, {'/'.join(MC_TASKS)}, nor a custom task with a spec, "
                             f"ner or multiple_choice")
        if sum((self.spec is not None, self.squad is not None, self.ner is not None,
                self.multiple_choice is not None)) > 1:
            raise ValueError(f"task {self.name!r}: set at most one of spec, squad, ner and multiple_choice")
        for given in (self.spec, self.multiple_choice):
            if given is not None and given.name != self.name:
                raise ValueError(f"task {self.name!r}: the spec's name is {given.name!r}")

    @property
    def is_squad(self) -> bool:
        return self.name in SQUAD_TASKS or self.squad is not None

    @property
    def is_ner(self) -> bool:
        return self.name in NER_TASKS or self.ner is not None

    @property
    def is_multiple_choice(self) -> bool:
        return self.name in MC_TASKS or self.multiple_choice is not None

    @property
    def choice_spec(self) -> ChoiceSpec:
        return self.multiple_choice or MC_TASKS[self.name]


@dataclass(frozen=True)
class FinetuneConfig:
    """All fine-tuning tasks of a run."""

    tasks: tuple[TaskJob, ...] = ()
    glue_root: str = ""
    """Folder holding the official GLUE task folders (CoLA/, SST-2/, MNLI/ ...)."""
    squad_root: str = ""
    """Folder holding train-v1.1.json, dev-v1.1.json, train-v2.0.json, dev-v2.0.json."""
    conll_root: str = ""
    """Folder holding the CoNLL files of the NER tasks (e.g. ``conll2003/iob2`` with train.txt, valid.txt)."""
    swag_root: str = ""
    """Folder holding SWAG's official train.csv and val.csv."""
    commonsenseqa_root: str = ""
    """Folder holding CommonsenseQA's train_rand_split.jsonl and dev_rand_split.jsonl."""
    copa_root: str = ""
    """Folder holding SuperGLUE COPA's train.jsonl and val.jsonl."""
    on_bad_row: Literal["count", "raise"] = "count"
    """Malformed input rows: skip and count them in the results, or fail the task naming file and line."""
    parallel_trials: bool = False
    """Run the learning rates of every task's sweep as parallel Ray Tune trials (``pipelines.finetune.trials``),
    each with its task's resources, instead of one after another inside the task."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"FinetuneConfig.tasks names must be unique, got {names}")


def task_data_uri(cfg: FinetuneConfig, job: TaskJob) -> str:
    if job.data_uri:
        return job.data_uri
    if job.is_squad:
        if not cfg.squad_root:
            raise ValueError(f"task {job.name}: set data_uri or squad_root")
        return cfg.squad_root
    if job.is_ner:
        if not cfg.conll_root:
            raise ValueError(f"task {job.name}: set data_uri or conll_root")
        return cfg.conll_root
    if job.is_multiple_choice:
        root = getattr(cfg, f"{job.name}_root") if job.name in MC_TASKS else ""
        if not root:
            raise ValueError(f"task {job.name}: set data_uri" + (f" or {job.name}_root" if job.name in MC_TASKS else ""))
        return root
    if not cfg.glue_root:
        raise ValueError(f"task {job.name}: set data_uri or glue_root")
    return glue.task_uri(cfg.glue_root, job.spec or glue.GLUE_TASKS[job.name], "")


def task_output_uri(output_root: str, job: TaskJob, checkpoint_uri: str) -> str:
    """``{output_root}/{task}/{hash}``: the hash of the task's identity (its resources left out, the rule of
    every identity: ``identity_data``) and the checkpoint's URI."""
    return storage.join(output_root, job.name, config_hash(identity_data(job), checkpoint_uri))


def demo_config(num_cpus: float = 1.0, num_gpus: float = 0.0, **hyper_params) -> FinetuneConfig:
    """The offline demo: one custom task on the shipped real labelled data (``pipelines/demo/task``).

    ``hyper_params`` override ``HyperParams`` fields, e.g. ``demo_config(num_epochs=1, max_train_examples=800)``.
    """
    return FinetuneConfig(tasks=(TaskJob(name=glue.DEMO_TASK.name, data_uri=glue.DEMO_TASK_DIR, spec=glue.DEMO_TASK,
                                         hyper_params=HyperParams(**hyper_params), num_cpus=num_cpus,
                                         num_gpus=num_gpus),))
