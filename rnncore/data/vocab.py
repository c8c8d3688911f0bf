"""Vocabularies: token <-> id with the special tokens <pad>, <unk>, <bos>, <eos>.

Specials take the first ids in the order given (by default <pad> 0, <unk> 1, <bos> 2, <eos> 3), then
the tokens. Building orders tokens by decreasing frequency with ties broken by the token itself, or
purely by token (``order="sorted"``): never by hash order, so a vocabulary built twice from the same
data is the same (min-char-rnn's ``list(set(data))`` is not). A vocabulary is saved with the model
(``to_dict`` / ``from_dict``, plain JSON).
"""

from collections import Counter

import numpy as np

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocab"]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """A fixed list of tokens; ``vocab[token]`` gives the id (unknown tokens map to <unk> when the
    vocabulary has it, else KeyError), ``vocab.itos[i]`` the token."""

    def __init__(self, tokens, specials=SPECIALS):
        specials = tuple(specials)
        tokens = [t for t in tokens if t not in specials]
        self.itos = list(specials) + tokens
        self.specials = specials
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            seen, dups = set(), []
            for t in self.itos:
                if t in seen and t not in dups:
                    dups.append(t)
                seen.add(t)
            raise ValueError(f"vocabulary tokens must be unique, got duplicates {dups[:10]}")

    @classmethod
    def build(cls, sequences, min_freq=1, max_size=None, specials=SPECIALS, order="frequency"):
        """From an iterable of token sequences (a string counts as a sequence of characters).
        Keeps tokens seen at least ``min_freq`` times, at most ``max_size`` of them (specials not
        counted), the most frequent first (``order="frequency"``) or ``order="sorted"``."""
        if int(min_freq) < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq!r}")
        if max_size is not None and int(max_size) < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size!r}")
        if order not in ("frequency", "sorted"):
            raise ValueError(f"order must be 'frequency' or 'sorted', got {order!r}")
        counts = Counter()
        for seq in sequences:
            counts.update(seq)
        for s in specials:
            counts.pop(s, None)
        kept = [(t, n) for t, n in counts.items() if n >= min_freq]
        kept.sort(key=lambda tn: (-tn[1], tn[0]))  # by frequency, ties by token: stable across runs
        if max_size is not None:
            kept = kept[: int(max_size)]
        tokens = [t for t, _ in kept]
        if order == "sorted":
            tokens.sort()
        return cls(tokens, specials)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.itos == other.itos and self.specials == other.specials

    def __repr__(self):
        return f"Vocab({len(self)} entries, specials={list(self.specials)})"

    def _special(self, token):
        return self.stoi.get(token) if token in self.specials else None

    @property
    def pad_id(self):
        return self._special(PAD)

    @property
    def unk_id(self):
        return self._special(UNK)

    @property
    def bos_id(self):
        return self._special(BOS)

    @property
    def eos_id(self):
        return self._special(EOS)

    def __getitem__(self, token):
        i = self.stoi.get(token)
        if i is None:
            if self.unk_id is None:
                raise KeyError(f"{token!r} is not in the vocabulary (which has no {UNK})")
            return self.unk_id
        return i

    def encode(self, tokens, add_bos=False, add_eos=False):
        """Token ids as an int64 array, with <bos> / <eos> around them when asked."""
        ids = [self[t] for t in tokens]
        if add_bos:
            ids.insert(0, self._require(BOS))
        if add_eos:
            ids.append(self._require(EOS))
        return np.array(ids, dtype=np.int64)

    def _require(self, token):
        i = self._special(token)
        if i is None:
            raise ValueError(f"this vocabulary has no {token}")
        return i

    def decode(self, ids, strip_specials=True, stop_at_eos=True):
        """Tokens from ids; by default up to the first <eos>, without <pad>/<bos>/<eos>."""
        ids = np.asarray(ids).reshape(-1)
        if ids.dtype.kind not in "iu" and ids.size:
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            bad = int(ids[(ids < 0) | (ids >= len(self))][0])
            raise ValueError(f"ids must lie in [0, {len(self)}) (the vocabulary size), got {bad}")
        out = []
        eos = self.eos_id
        for i in ids.tolist():
            if stop_at_eos and eos is not None and i == eos:
                break
            token = self.itos[i]
            if strip_specials and token in self.specials and token != UNK:
                continue
            out.append(token)
        return out

    def to_dict(self):
        return {"specials": list(self.specials), "tokens": self.itos[len(self.specials):]}

    @classmethod
    def from_dict(cls, d):
        """The inverse of ``to_dict``: ``{"tokens": [...], "specials": [...]}`` with string entries."""
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a vocabulary must be a dict with a 'tokens' list (and 'specials'), got {got}")
        unknown = sorted(set(d) - {"tokens", "specials"})
        if unknown:
            raise ValueError(f"a vocabulary dict has unknown keys {unknown}; known: ['specials', 'tokens']")
        specials = d.get("specials", SPECIALS)
        for name, items in (("tokens", d["tokens"]), ("specials", specials)):
            if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
                raise ValueError(f"a vocabulary's {name} must be a list of strings")
        return cls(d["tokens"], specials)
