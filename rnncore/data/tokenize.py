"""Tokenisers: characters or words, each with the inverse ``join`` and a JSON form to save with a model.

- ``CharTokenizer``: every Unicode character is a token; ``join`` concatenates.
- ``WordTokenizer``: runs of word characters, and each other non-space character on its own
  (``"Hello, world!"`` -> ``Hello , world !``), optionally lower-cased; ``join`` puts spaces between
  tokens except before closing punctuation.
"""

import re
from pathlib import Path

__all__ = ["CharTokenizer", "WordTokenizer", "decode_utf8", "make_tokenizer", "read_text",
           "tokenizer_from_dict"]


def decode_utf8(data, name):
    """``data`` (bytes) decoded as UTF-8 (a leading byte-order mark dropped). Bytes that are not UTF-8
    are a ValueError naming ``name``, the byte offset and the line; there is no silent fallback to
    another encoding (convert the file first, e.g. ``iconv -f latin1 -t utf-8``)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{name} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} "
                         f"(line {line}) cannot be decoded ({err.reason}); convert the file to UTF-8"
                         ) from None


def read_text(path):
    """The contents of the UTF-8 text file ``path``; see ``decode_utf8`` for bytes that are not UTF-8."""
    return decode_utf8(Path(path).read_bytes(), path)


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
