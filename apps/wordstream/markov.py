"""The "model": a word-level Markov chain over a public-domain text, the opening of Lewis
Carroll's *Alice's Adventures in Wonderland* (1865), bundled as ``corpus.txt``.

Deterministic: the same prompt continues with the same words in every worker, in the tests
and in the browser test (the seed is a CRC of the prompt's tokens, not Python's per-process
``hash``). No network, no weights.
"""

from __future__ import annotations

import itertools
import random
import string
import zlib
from pathlib import Path

CORPUS = Path(__file__).with_name("corpus.txt")
_STRIP = string.punctuation + "\u2014\u2018\u2019\u201c\u201d"  # and the dash and curly quotes


def key(word: str) -> str:
    """What the chain knows a word by: lowercased, without the punctuation around it."""
    return word.strip(_STRIP).lower()


def tokenize(text: str) -> list[str]:
    """A prompt as the chain's tokens (words that are only punctuation dropped)."""
    return [token for word in text.split() if (token := key(word))]


class Chain:
    """Which words follow each word in ``text``, with repeats (so, with their frequency)."""

    def __init__(self, text: str) -> None:
        words = text.split()
        self.follows: dict[str, list[str]] = {}
        for word, after in itertools.pairwise(words):
            self.follows.setdefault(key(word), []).append(after)
        # where a text may start when the prompt's words are not in the corpus: a sentence's start
        self.openings = [words[0], *(after for word, after in itertools.pairwise(words) if word.endswith((".", "?")))]

    def words(self, tokens: list[str], n: int) -> list[str]:
        """``n`` words continuing the prompt ``tokens``, as they appear in the corpus."""
        rng = random.Random(zlib.crc32(" ".join(tokens).encode()))
        last = next((token for token in reversed(tokens) if token in self.follows), None)
        out: list[str] = []
        for _ in range(n):
            word = rng.choice(self.follows.get(last, self.openings) if last is not None else self.openings)
            out.append(word)
            last = key(word)
        return out


CHAIN = Chain(CORPUS.read_text(encoding="utf-8"))


def words(tokens: list[str], n: int) -> list[str]:
    """``CHAIN.words``: what ``GET /generate`` streams for a prompt of ``tokens``."""
    return CHAIN.words(tokens, n)
