"""WordPiece tokenizer with BERT normalisation, assembled one named step at a time with `tokenizers`:
normalizer (clean text, CJK spacing, optional lowercase / accent stripping) -> BERT pre-tokenizer
(whitespace and punctuation) -> WordPiece model -> ``[CLS] A [SEP] B [SEP]`` post-processor.

Loads a ``vocab.txt`` (one piece per line, id = line number) or a ``tokenizer.json``; local paths
only (the pipelines fetch remote files first).
"""
from __future__ import annotations

import collections
import json
import os
import string
import unicodedata
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _assemble(model: models.Model, lowercase: bool, strip_accents: bool | None) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _check_specials(tok: Tokenizer) -> None:
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"vocabulary lacks special token(s) {', '.join(missing)}")


def _add_template(tok: Tokenizer) -> Tokenizer:
    _check_specials(tok)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def _pieces_by_id(tok: Tokenizer) -> list[str]:
    by_id = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    return [piece for piece, _ in by_id]


def training_alphabet(texts: Iterable[str], normalizer, limit: int) -> list[str]:
    """The ``limit`` most frequent non-space characters of the normalised texts (ties: lower code point
    first), sorted by code point: the characters the trainer keeps, chosen deterministically.

    BERT's normaliser works character by character, so the raw characters are counted (in C, a
    megabyte at a time) and each distinct one is normalised once.
    """
    raw: collections.Counter[str] = collections.Counter()
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= 1 << 20:
            raw.update("".join(chunk))
            chunk, size = [], 0
    raw.update("".join(chunk))
    counts: collections.Counter[str] = collections.Counter()
    for c, n in raw.items():
        for out in normalizer.normalize_str(c):
            counts[out] += n
    frequent = sorted((c for c in counts if not c.isspace()), key=lambda c: (-counts[c], ord(c)))[:limit]
    return sorted(frequent, key=ord)


def _always_alone(c: str) -> bool:
    """Characters the BERT pre-tokenizer (punctuation) or normalizer (CJK ideographs) always split off
    as words of their own, so they never occur as ``##c``."""
    if c in string.punctuation or unicodedata.category(c).startswith("P"):
        return True
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# The ideograph blocks BertNormalizer(handle_chinese_chars=True) surrounds with spaces.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


class WordPieceTokenizer:
    """Thin, typed face over a ``tokenizers.Tokenizer`` configured as BERT's."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        _check_specials(tokenizer)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            tokenizer.token_to_id(t) for t in SPECIAL_TOKENS
        )

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab: Sequence[str], lowercase: bool = True, strip_accents: bool | None = None) -> "WordPieceTokenizer":
        """``strip_accents=None`` follows ``lowercase``, as BERT's uncased models do."""
        table: dict[str, int] = {}
        for i, piece in enumerate(vocab):
            table.setdefault(piece, i)
        model = models.WordPiece(table, unk_token="[UNK]", max_input_chars_per_word=100)
        return cls(_add_template(_assemble(model, lowercase, strip_accents)))

    @classmethod
    def from_vocab_file(cls, path: str, lowercase: bool = True, strip_accents: bool | None = None) -> "WordPieceTokenizer":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocab file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            vocab = [line.rstrip("\n").rstrip("\r") for line in f]
        while vocab and vocab[-1] == "":
            vocab.pop()
        if not vocab:
            raise ValueError(f"vocab file {path!r} is empty")
        return cls.from_vocab(vocab, lowercase, strip_accents)

    @classmethod
    def load(cls, path: str, lowercase: bool | None = None, strip_accents: bool | None = None) -> "WordPieceTokenizer":
        """A ``vocab.txt``, a ``tokenizer.json``, or a directory holding either (tokenizer.json first).

        A ``tokenizer.json`` carries its own normaliser: ``lowercase=None`` keeps its casing, and a
        ``lowercase`` that contradicts it raises rather than being ignored. For a ``vocab.txt``, None
        means lowercase (BERT's uncased models; also transformers' ``BertTokenizer`` default).
        """
        if os.path.isdir(path):
            for name in ("tokenizer.json", "vocab.txt"):
                if os.path.isfile(os.path.join(path, name)):
                    return cls.load(os.path.join(path, name), lowercase, strip_accents)
            raise FileNotFoundError(f"{path!r} holds neither tokenizer.json nor vocab.txt")
        if path.endswith(".json"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"tokenizer file {path!r} does not exist")
            tok = cls(_add_template(Tokenizer.from_file(path)))
            if lowercase is not None and lowercase != tok.lowercase:
                raise ValueError(f"{path!r} {'lowercases' if tok.lowercase else 'keeps case'} (its normalizer), "
                                 f"but lowercase={lowercase} was asked for")
            return tok
        return cls.from_vocab_file(path, True if lowercase is None else lowercase, strip_accents)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 30522, min_frequency: int = 2,
              lowercase: bool = True, strip_accents: bool | None = None,
              limit_alphabet: int = 1000) -> "WordPieceTokenizer":
        """Train a WordPiece vocabulary; the five special tokens take ids 0-4. Deterministic: the same
        texts give the same vocabulary in the same order.

        ``texts`` is read twice (a one-shot iterator is first held in a list): once for the alphabet,
        once by the trainer. tokenizers' trainer alone is not deterministic (its issue #1794): it gives
        each ``##c`` piece an id in hash-map order, and those ids break ties between equally frequent
        merges, so two runs can differ in order and even in the pieces. Here the alphabet (the
        ``limit_alphabet`` most frequent characters, ties by code point) and every ``##c`` piece the
        trainer could need are handed to it up front in sorted order.
        """
        if iter(texts) is texts:
            texts = list(texts)
        tok = _assemble(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100), lowercase, strip_accents)
        alphabet = training_alphabet(texts, tok.normalizer, limit_alphabet)
        continuing = ["##" + c for c in alphabet if not _always_alone(c)]
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS) + continuing,
            limit_alphabet=len(alphabet), initial_alphabet=alphabet, continuing_subword_prefix="##",
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        # The ##c pieces went in as special tokens only to fix their ids: rebuilt from the vocabulary,
        # they are ordinary pieces again (special tokens would be matched verbatim in input text).
        return cls.from_vocab(_pieces_by_id(tok), lowercase, strip_accents)

    # --- use --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def lowercase(self) -> bool:
        """Whether the normaliser lowercases (read from the tokenizer's own JSON)."""
        return any(n.get("lowercase", n.get("type") == "Lowercase") for n in self._normalizers())

    @property
    def strip_accents(self) -> bool | None:
        """The BERT normaliser's ``strip_accents`` (None: follows ``lowercase``), as transformers'
        ``tokenizer_config.json`` records it."""
        found = [n.get("strip_accents") for n in self._normalizers() if n.get("type") == "BertNormalizer"]
        return found[0] if found else None

    def _normalizers(self) -> list[dict]:
        spec = json.loads(self.tokenizer.to_str()).get("normalizer") or {}
        return spec.get("normalizers", []) if spec.get("type") == "Sequence" else [spec] if spec else []

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def vocab(self) -> list[str]:
        """Pieces ordered by id (the lines of vocab.txt)."""
        return _pieces_by_id(self.tokenizer)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        # encode_batch_fast: the same ids without character offsets (~15% faster)
        return [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)]

    def encode_truncated(self, pairs: Sequence[tuple[str, str | None]], max_length: int) -> list[tuple[list[int], list[int]]]:
        """Unpadded ``(input_ids, token_type_ids)`` of ``[CLS] A [SEP] B [SEP]``, truncated to
        ``max_length`` longest-first across the two segments (tokenizers' own algorithm)."""
        if max_length < 4:
            raise ValueError(f"max_length {max_length} leaves no room for tokens")
        # A copy with truncation on, so the shared tokenizer's settings never change under a caller.
        truncating = Tokenizer.from_str(self.tokenizer.to_str())
        truncating.enable_truncation(max_length, strategy="longest_first")
        truncating.no_padding()
        inputs = [a if b is None else (a, b) for a, b in pairs]
        return [(e.ids, e.type_ids) for e in truncating.encode_batch(inputs)]

    def encode_pairs(self, pairs: Sequence[tuple[str, str | None]], max_length: int) -> Iterator[dict]:
        """[CLS] A [SEP] B [SEP] encodings truncated longest-first to ``max_length``, padded to it."""
        for ids, types in self.encode_truncated(pairs, max_length):
            pad = max_length - len(ids)
            yield {"input_ids": ids + [self.pad_id] * pad, "token_type_ids": types + [0] * pad,
                   "attention_mask": [1] * len(ids) + [0] * pad}

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def save(self, directory: str) -> None:
        """Write ``vocab.txt`` and ``tokenizer.json``."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(self.vocab()) + "\n")
        self.tokenizer.save(os.path.join(directory, "tokenizer.json"))
