"""A single-process reimplementation of BERT's original ``create_pretraining_data.py`` with a
pure-Python WordPiece tokenizer (BERT's ``tokenization.py`` logic: basic tokenizer, then greedy
longest-match-first WordPiece). Written here from the published algorithm; the baseline (a) of
``bench.preprocess`` (imported from here) and the reference that ``tests/pipelines/test_nsp_pairs.py`` checks
``pipelines.stages.nsp_pairs`` against, instance for instance.

Masked-LM predictions are left out: the pipeline masks dynamically when batches are read for
training, so neither side does that work here.
"""
from __future__ import annotations

import random
import unicodedata
from typing import Iterable


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class BasicTokenizer:
    """Cleaning, CJK spacing, lower-casing with accent stripping, splitting on punctuation."""

    def __init__(self, lowercase: bool = True):
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_cjk(cp):
                chars += [" ", ch, " "]
            else:
                chars.append(" " if _is_whitespace(ch) else ch)
        out: list[str] = []
        for word in "".join(chars).split():
            if self.lowercase:
                word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
            out += self._split_punctuation(word)
        return out

    @staticmethod
    def _split_punctuation(word: str) -> list[str]:
        pieces: list[str] = []
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    pieces.append(current)
                pieces.append(ch)
                current = ""
            else:
                current += ch
        if current:
            pieces.append(current)
        return pieces


class WordPiece:
    """Greedy longest-match-first sub-word split against a vocabulary."""

    def __init__(self, vocab: dict[str, int], unk: str = "[UNK]", max_chars: int = 100):
        self.vocab, self.unk, self.max_chars = vocab, unk, max_chars

    def tokenize(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                return [self.unk]
            pieces.append(found)
            start = end
        return pieces


class FullTokenizer:
    def __init__(self, vocab_file: str, lowercase: bool = True):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.basic = BasicTokenizer(lowercase)
        self.wordpiece = WordPiece(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return [p for w in self.basic.tokenize(text) for p in self.wordpiece.tokenize(w)]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Truncate the longer side a token at a time, from the front or the back at random."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc) >= 1
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_instances_from_document(all_documents: list[list[list]], document_index: int, max_seq_length: int,
                                   short_seq_prob: float, rng: random.Random,
                                   cls: object = "[CLS]", sep: object = "[SEP]") -> list[dict]:
    """The original function, minus the masked-LM step: -> dicts of tokens, segment_ids, is_random_next."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk: list[list] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])
                tokens_b = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert len(tokens_a) >= 1 and len(tokens_b) >= 1
                tokens = [cls] + tokens_a + [sep] + tokens_b + [sep]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                instances.append({"tokens": tokens, "segment_ids": segment_ids, "is_random_next": is_random_next})
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_training_instances(documents: Iterable[list[str]], tokenizer: FullTokenizer, max_seq_length: int,
                              dupe_factor: int, short_seq_prob: float, rng: random.Random) -> list[dict]:
    """``documents``: lists of sentences (the original's lines). Tokenize, shuffle, pass, shuffle."""
    all_documents = []
    for sentences in documents:
        doc = [tokens for tokens in (tokenizer.tokenize(s) for s in sentences) if tokens]
        if doc:
            all_documents.append(doc)
    rng.shuffle(all_documents)
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(all_documents)):
            instances.extend(create_instances_from_document(all_documents, document_index, max_seq_length,
                                                            short_seq_prob, rng))
    rng.shuffle(instances)
    return instances
