"""The tokens of a TOKENIZED ``sentence_ids`` column (list<list<int32>>) seen in place, never copied: what
``nsp_pairs`` plans from (sentence and document offsets) and gathers its pairs out of.

    view = TokenView.of(table.column("sentence_ids"))
    view.sent_off[i]:view.sent_off[i + 1]     # the global token range of sentence i
    view.doc_off[d]:view.doc_off[d + 1]       # the sentence range of document (row) d
    view.gather(index)                        # the tokens at global positions ``index``
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class TokenView:
    arrays: tuple[np.ndarray, ...]
    """The column's tokens, one int32 array per chunk that has any (a shuffle's block is the shards it
    gathered, one chunk each); each a view of Arrow's buffer."""
    starts: np.ndarray
    """The global index of each array's first token (int64)."""
    sent_off: np.ndarray
    """Global token offsets of the sentences (int64, one more than sentences)."""
    doc_off: np.ndarray
    """Global sentence offsets of the documents, i.e. rows (int64, one more than rows)."""

    @classmethod
    def of(cls, column: pa.ChunkedArray) -> "TokenView":
        arrays, starts = [], []
        sent_parts, doc_parts = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        tokens = sentences_seen = 0
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            sentences = chunk.flatten()
            values = np.asarray(sentences.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)  # a view
            sent = sentences.offsets.to_numpy().astype(np.int64)
            doc = chunk.offsets.to_numpy().astype(np.int64)
            sent_parts.append(sent[1:] - sent[0] + tokens)
            doc_parts.append(doc[1:] - doc[0] + sentences_seen)
            if len(values):
                arrays.append(values)
                starts.append(tokens)
            tokens += int(sent[-1] - sent[0])
            sentences_seen += int(doc[-1] - doc[0])
        return cls(tuple(arrays) or (np.zeros(0, np.int32),), np.asarray(starts or [0], np.int64),
                   np.concatenate(sent_parts), np.concatenate(doc_parts))

    def gather(self, index: np.ndarray) -> np.ndarray:
        """The tokens at global positions ``index`` (int32, in ``index``'s order)."""
        if len(self.arrays) == 1:
            return self.arrays[0][index]
        which = np.searchsorted(self.starts, index, side="right") - 1
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(self.arrays) + 1))
        out = np.empty(len(index), np.int32)
        for c, (array, start) in enumerate(zip(self.arrays, self.starts)):
            at = order[bounds[c]:bounds[c + 1]]
            if len(at):
                out[at] = array[index[at] - start]
        return out
