"""Incremental detokenization: one text piece per token id.

Decoding token by token breaks multi-byte characters (an emoji split over two
byte-level tokens) and drops the spaces some tokenizers add between words. Like
text-generation-inference, we decode a short window before the new token and the
window with it, and emit the difference; a piece that ends in U+FFFD (an
incomplete UTF-8 sequence) is held back until the character completes.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # ids before this have been emitted as text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _piece(self, ids: list[int]) -> tuple[str, bool]:
        """The text the ids after the read offset add; (text, complete)."""
        before = self._decode(ids[self._prefix:self._read])
        after = self._decode(ids[self._prefix:])
        if after.endswith(_INCOMPLETE) or len(after) < len(before):
            return "", False
        return after[len(before):], True

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes (may be "")."""
        self._ids.append(token_id)
        text, complete = self._piece(self._ids)
        if complete:
            self._prefix, self._read = self._read, len(self._ids)
        return text

    def peek(self, token_ids: list[int]) -> list[str]:
        """Text pieces the given ids would produce after the current ones, without
        consuming them (for drafted tokens that may be rejected)."""
        saved = (list(self._ids), self._prefix, self._read)
        try:
            return [self.push(t) for t in token_ids]
        finally:
            self._ids, self._prefix, self._read = saved
