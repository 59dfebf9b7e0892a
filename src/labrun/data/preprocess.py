"""Cleaning, tokenisation and the vocabulary: the text half of a classifier, kept with the model."""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1  # their places at the head of every vocabulary
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_NUMERIC_ENTITY = re.compile(r"(?<!&)#(\d+);")


@dataclass
class TextPreprocessor:
    """Turns raw text into token ids exactly as in training; pickled with the logged model."""

    lowercase: bool = True
    unicode_form: str | None = "NFKC"
    unescape: bool = False
    tokenizer: str = "basic"
    max_length: int = 64
    itos: list[str] = field(default_factory=list)

    def clean(self, text: str) -> str:
        if self.unescape:  # AG News keeps the feed's escapes: `\$`, `\` for a line break, `#39;`
            text = text.replace("\\$", "$").replace("\\", " ")
            text = html.unescape(_NUMERIC_ENTITY.sub(r"&#\1;", text))
        if self.unicode_form:
            text = unicodedata.normalize(self.unicode_form, text)
        if self.lowercase:
            text = text.lower()
        return _SPACE.sub(" ", text).strip()

    def tokenize(self, text: str) -> list[str]:
        if self.tokenizer == "whitespace":
            return text.split()
        return _TOKEN.findall(text)

    def build_vocab(
        self, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
    ) -> None:
        """Vocabulary from the train split only, most frequent first, ties broken by token."""
        counts = Counter(tok for text in texts for tok in self.tokenize(text))
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - 2)]
        self.itos = [PAD, UNK, *ranked]
        self._stoi = {t: i for i, t in enumerate(self.itos)}

    @property
    def stoi(self) -> dict[str, int]:
        if not hasattr(self, "_stoi") or len(self._stoi) != len(self.itos):
            self._stoi = {t: i for i, t in enumerate(self.itos)}
        return self._stoi

    def encode(self, cleaned: str) -> list[int]:
        """Token ids of already-cleaned text, cut to `max_length`, at least one token long."""
        stoi = self.stoi
        ids = [stoi.get(tok, UNK_ID) for tok in self.tokenize(cleaned)[: self.max_length]]
        return ids or [UNK_ID]

    def __call__(self, text: str) -> list[int]:
        return self.encode(self.clean(text))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_stoi", None)
        return state
