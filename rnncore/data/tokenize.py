"""Tokenisers: characters or words, each with the inverse ``join`` and a JSON form to save with a model.

- ``CharTokenizer``: every Unicode character is a token; ``join`` concatenates.
- ``WordTokenizer``: runs of word characters, and each other non-space character on its own
  (``"Hello, world!"`` -> ``Hello , world !``), optionally lower-cased; ``join`` puts spaces between
  tokens except before closing punctuation.
"""

import re

__all__ = ["CharTokenizer", "WordTokenizer", "make_tokenizer", "tokenizer_from_dict"]


class CharTokenizer:
    kind = "char"

    def __call__(self, text):
        return list(text)

    def join(self, tokens):
        return "".join(tokens)

    def to_dict(self):
        return {"kind": self.kind}

    def __repr__(self):
        return "CharTokenizer()"


class WordTokenizer:
    kind = "word"
    _pattern = re.compile(r"\w+|[^\w\s]", re.UNICODE)
    _no_space_before = set(".,;:!?)]}'\"")

    def __init__(self, lower=False):
        self.lower = bool(lower)

    def __call__(self, text):
        if self.lower:
            text = text.lower()
        return self._pattern.findall(text)

    def join(self, tokens):
        out = []
        for i, t in enumerate(tokens):
            if i and not (t in self._no_space_before or tokens[i - 1] in "([{"):
                out.append(" ")
            out.append(t)
        return "".join(out)

    def to_dict(self):
        return {"kind": self.kind, "lower": self.lower}

    def __repr__(self):
        return f"WordTokenizer(lower={self.lower})"


def make_tokenizer(kind="char", lower=False):
    if kind == "char":
        return CharTokenizer()
    if kind == "word":
        return WordTokenizer(lower=lower)
    raise ValueError(f"tokenizer must be 'char' or 'word', got {kind!r}")


def tokenizer_from_dict(d):
    return make_tokenizer(d.get("kind", "char"), d.get("lower", False))
