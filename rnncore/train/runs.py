"""Training runs as the command line starts them: a resolved config in, a run directory out.

A run directory holds::

    config.json      the resolved config (every option, the seed used included)
    metrics.jsonl    one JSON record per logged step and per epoch (rnncore.train.loop)
    diagnostics.jsonl  with ``diagnose_every``: gradient-flow records (rnncore.diagnostics.run)
    curve.png        training and validation loss (when matplotlib is installed)
    checkpoint/      the model, optimizer and training state (rnncore.train.checkpoint)

A task is registered in ``TASKS`` under the name of its ``rnncore train`` subcommand with a function
``run(config, echo)`` that trains and returns a summary dict, and a function
``data(config, model)`` that returns the (valid, test) sources of a config, encoded with the
trained model's vocabularies, for ``rnncore evaluate``.
"""

import json
import time
from pathlib import Path

import numpy as np

from rnncore.data.batching import split_indices
from rnncore.data.sources import SequenceSource, StreamSource, collate_classification, collate_lm
from rnncore.data.tokenize import make_tokenizer, read_text
from rnncore.data.vocab import Vocab
from rnncore.train.loop import Progress, Trainer, blas_threads, evaluate_source, plot_curves
from rnncore.train.optim import make_optimizer
from rnncore.train.schedules import make_schedule

__all__ = ["TASKS", "blas_threads", "build_trainer", "find_checkpoint", "finish_run", "read_run_config",
           "register_task", "start_run"]

TASKS = {}


def register_task(name, run, data=None):
    """Make ``rnncore train <name>``'s training function (and its data builder) known."""
    TASKS[name] = {"run": run, "data": data}


# -- run directories ---------------------------------------------------------------------------------
def start_run(config, overwrite=False):
    """Create the run directory and write the resolved config. A directory where a run has started
    training (a metrics log or a checkpoint) is an error unless ``overwrite`` (then its files are
    replaced) or the config resumes it."""
    out = Path(config["out"])
    started = (out / "metrics.jsonl").exists() or (out / "checkpoint" / "checkpoint.json").exists()
    if started and not config.get("resume") and not overwrite:
        raise FileExistsError(f"{out} already holds a run: use --overwrite to replace it or --resume {out}")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not config.get("resume"):
        for name in ("metrics.jsonl", "curve.png", "diagnostics.jsonl"):
            (out / name).unlink(missing_ok=True)
        ckpt = out / "checkpoint"
        if ckpt.is_dir():
            for f in ckpt.iterdir():
                f.unlink()
    from rnncore.train.checkpoint import write_atomic

    write_atomic(out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def read_run_config(path):
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: not a run directory (no config.json)")
    try:
        config = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is corrupted: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file} is corrupted: expected a JSON object, got {type(config).__name__}")
    return config


def find_checkpoint(path):
    """The checkpoint directory of a run directory, or ``path`` itself if it is a checkpoint."""
    path = Path(path)
    if (path / "checkpoint" / "checkpoint.json").is_file():
        return path / "checkpoint"
    if (path / "checkpoint.json").is_file():
        return path
    raise FileNotFoundError(f"{path}: no checkpoint found (neither {path}/checkpoint.json nor "
                            f"{path}/checkpoint/checkpoint.json)")


def build_trainer(config, model, echo):
    """A Trainer from the optimization part of a config (fresh, or resumed from ``config['out']``)."""
    steps_per_epoch = config["_steps_per_epoch"]
    total = config["epochs"] * steps_per_epoch
    if config.get("max_steps"):
        total = min(total, config["max_steps"])
    schedule = make_schedule(config["schedule"], total_steps=total, warmup_steps=config["warmup"],
                             step_size=config.get("step_size") or max(total // 3, 1), gamma=config["gamma"],
                             min_factor=config.get("min_lr_factor", 0.0))
    progress = Progress(every=config["log_every"] * 10, enabled=not config.get("quiet"))
    common = dict(schedule=schedule, out_dir=config["out"], checkpoint_every=config.get("checkpoint_every"),
                  log_every=config["log_every"], progress=progress,
                  diagnose_every=config.get("diagnose_every") or None)
    if config.get("resume"):
        trainer = Trainer.resume(config["out"], model=model, **common)
        echo(f"resumed {config['out']} at step {trainer.step} (epoch {trainer.epoch + 1}, "
             f"batch {trainer.batch_in_epoch})")
        return trainer
    options = {"weight_decay": config["weight_decay"]}
    if config["optimizer"] == "sgd":
        options.update(momentum=config["momentum"], nesterov=config["nesterov"])
    if config["optimizer"] == "rmsprop":
        options.update(momentum=config["momentum"])
    optimizer = make_optimizer(config["optimizer"], model, config["lr"], **options)
    return Trainer(model, optimizer, clip_norm=config["clip"], clip_value=config["clip_value"],
                   run_info={"task": config["task"]}, **common)


def finish_run(trainer, config, echo):
    out = Path(config["out"])
    if (out / "metrics.jsonl").exists():
        png = plot_curves(out / "metrics.jsonl", out / "curve.png", title=f"rnncore train {config['task']}")
        if png is not None:
            echo(f"training curve: {png}")
    echo(f"run directory: {out} (model in {out / 'checkpoint'})")


# -- language model ------------------------------------------------------------------------------
def _read_text(config):
    if config.get("text"):
        try:
            text = read_text(config["text"])
        except ValueError as err:
            raise ValueError(f"--text: {err}") from None
    else:
        from rnncore.data.corpora import python_docs_text

        text = python_docs_text()
    if config.get("max_chars"):
        text = text[: config["max_chars"]]
    return text


def lm_data(config, model=None):
    """(train, valid, test) sources for a language-model config: the text's last ``valid_fraction``
    is validation (contiguous, after the training part); test is the validation part again. With
    ``lines`` each non-empty line is one <bos> ... <eos> sequence, split at random by the seed."""
    text = _read_text(config)
    tokenizer = make_tokenizer(config["tokenizer"], config["lower"])
    if config.get("lines"):
        lines = [line for line in text.splitlines() if line.strip()]
        fractions = (1 - config["valid_fraction"], config["valid_fraction"])
        train_idx, valid_idx = split_indices(len(lines), fractions, seed=config["seed"])
        token_lines = [tokenizer(line) for line in lines]
        vocab = model.vocab if model is not None else Vocab.build(
            [token_lines[i] for i in train_idx], config["min_freq"], config.get("max_vocab"),
            order="sorted" if config["tokenizer"] == "char" else "frequency")
        seqs = [vocab.encode(t, add_bos=True, add_eos=True) for t in token_lines]

        def source(idx, shuffle):
            return SequenceSource([seqs[i] for i in idx], [len(seqs[i]) for i in idx], config["batch_size"],
                                  lambda b: collate_lm(b, vocab.pad_id), shuffle=shuffle, seed=config["seed"])
        return vocab, source(train_idx, True), source(valid_idx, False), source(valid_idx, False)
    tokens = tokenizer(text)
    n_valid = max(int(len(tokens) * config["valid_fraction"]), 2 * config["bptt"] + 2)
    if len(tokens) - n_valid < 2 * config["bptt"] + 2:
        raise ValueError(f"the text has {len(tokens)} tokens: too few for bptt {config['bptt']} with a "
                         f"validation part of {config['valid_fraction']:.0%}")
    train_tok, valid_tok = tokens[:-n_valid], tokens[-n_valid:]
    vocab = model.vocab if model is not None else Vocab.build(
        [train_tok], config["min_freq"], config.get("max_vocab"),
        order="sorted" if config["tokenizer"] == "char" else "frequency")
    train_ids, valid_ids = vocab.encode(train_tok), vocab.encode(valid_tok)
    batch = config["batch_size"]
    train = StreamSource(train_ids, min(batch, (len(train_ids) - config["bptt"]) // 2 or 1), config["bptt"],
                         seed=config["seed"])
    valid_batch = max(1, min(batch, (len(valid_ids) - config["bptt"]) // 2))
    valid = StreamSource(valid_ids, valid_batch, config["bptt"], shuffle=False)
    return vocab, train, valid, valid


def _default_prime(config, vocab):
    if config.get("prime"):
        return config["prime"]
    return "" if config.get("lines") else ("The " if config["tokenizer"] == "char" else "the")


def run_language_model(config, echo=print):
    """Train a language model on ``config['text']`` (or the built-in corpus) and print samples."""
    from rnncore.models.language_model import LanguageModel

    t0 = time.perf_counter()
    with blas_threads(config.get("blas_threads")):
        if config.get("resume"):
            from rnncore.train.checkpoint import load_model

            model = load_model(find_checkpoint(config["out"]))
            vocab, train, valid, _ = lm_data(config, model)
        else:
            vocab, train, valid, _ = lm_data(config)
            model = LanguageModel(vocab, cell=config["cell"], embedding_dim=config["embedding_dim"] or None,
                                  hidden_size=config["hidden_size"], num_layers=config["num_layers"],
                                  dropout=config["dropout"], tokenizer=config["tokenizer"],
                                  lower=config["lower"], bos_eos=bool(config.get("lines")),
                                  dtype=config["dtype"], seed=config["seed"])
        config["_steps_per_epoch"] = len(train)
        source = config.get("text") or "built-in corpus (CPython's pydoc topics)"
        echo(f"language model: {config['cell']} {config['num_layers']}x{config['hidden_size']}, "
             f"{model.num_parameters():,} parameters, vocabulary {len(vocab)} {config['tokenizer']}s; "
             f"data {source}: {len(train)} batches per epoch")
        trainer = build_trainer(config, model, echo)
        prime = _default_prime(config, vocab)

        def sample(tag):
            n = 3 if config.get("lines") else 1
            texts = model.generate(prime, config["sample_length"], config["temperature"], config.get("top_k"),
                                   seed=config["seed"], num_samples=n)
            echo(f"--- sample {tag} ---")
            echo(" | ".join(texts) if config.get("lines") else texts[0])

        every = config.get("sample_every") or 0

        def on_step(tr, loss, norm):
            if every and tr.step % every == 0:
                sample(f"after step {tr.step} (loss {loss:.3f})")

        if not config.get("resume") and every:
            sample("before training")
        history = trainer.fit(train, valid, epochs=config["epochs"], max_steps=config.get("max_steps"),
                              on_step=on_step)
        if not every or trainer.step % every:
            sample(f"after step {trainer.step}")
        metrics = evaluate_source(model, valid)
        elapsed = time.perf_counter() - t0
        echo(f"validation: loss {metrics['loss']:.4f} nats/token, perplexity {metrics['perplexity']:.3f}, "
             f"{metrics['bits_per_token']:.3f} bits/token ({elapsed:.1f} s)")
        finish_run(trainer, config, echo)
    return {"valid": metrics, "history": history, "seconds": elapsed, "steps": trainer.step}


# -- classifier ----------------------------------------------------------------------------------
def classify_data(config, model=None):
    """(labels, vocab, examples, (train, valid, test) index arrays) for a classifier config."""
    dataset = config.get("dataset")
    if config.get("data"):
        from rnncore.models.classifier import read_labelled_lines

        pairs = read_labelled_lines(config["data"])
        tokenizer = make_tokenizer(config["tokenizer"], config["lower"])
        texts = [tokenizer(t) for _, t in pairs]
        raw_labels = [label for label, _ in pairs]
    elif dataset == "names-gender":
        from rnncore.data.corpora import first_name_genders

        pairs = first_name_genders()
        texts = [list(name.lower()) for name, _ in pairs]
        raw_labels = [g for _, g in pairs]
    elif dataset == "digits":
        from rnncore.data.corpora import digits_rows

        X, y = digits_rows()
        texts, raw_labels = list(X.astype(config["dtype"])), [str(v) for v in y]
    else:
        raise ValueError("give --data FILE or --dataset names-gender|digits")
    parts = split_indices(len(texts), (1 - 2 * config["valid_fraction"], config["valid_fraction"],
                                       config["valid_fraction"]), seed=config["seed"])
    if model is not None:
        vocab, labels = model.vocab, model.labels
    else:
        labels = Vocab(sorted(set(raw_labels)), specials=())
        vocab = None if dataset == "digits" else Vocab.build(
            [texts[i] for i in parts[0]], config["min_freq"], config.get("max_vocab"),
            order="sorted" if config["tokenizer"] == "char" else "frequency")
    if vocab is None:
        examples = [(x, labels[label]) for x, label in zip(texts, raw_labels)]
    else:
        examples = [(vocab.encode(t) if t else np.array([vocab.unk_id]), labels[label])
                    for t, label in zip(texts, raw_labels)]

    def collate(batch):
        if vocab is not None:
            return collate_classification(batch, vocab.pad_id)
        from rnncore.data.batching import Batch, pad_sequences

        x, lengths = pad_sequences([e[0] for e in batch], 0.0, dtype=config["dtype"])
        return Batch(inputs=x, lengths=lengths, labels=np.array([e[1] for e in batch], dtype=np.int64))

    def source(idx, shuffle):
        return SequenceSource([examples[i] for i in idx], [len(examples[i][0]) for i in idx],
                              config["batch_size"], collate, shuffle=shuffle, seed=config["seed"])
    return labels, vocab, source(parts[0], True), source(parts[1], False), source(parts[2], False)


def run_classifier(config, echo=print):
    from rnncore.models.classifier import SequenceClassifier

    t0 = time.perf_counter()
    with blas_threads(config.get("blas_threads")):
        if config.get("resume"):
            from rnncore.train.checkpoint import load_model

            model = load_model(find_checkpoint(config["out"]))
            labels, vocab, train, valid, test = classify_data(config, model)
        else:
            labels, vocab, train, valid, test = classify_data(config)
            input_size = 8 if vocab is None else None
            model = SequenceClassifier(labels, vocab, input_size=input_size, cell=config["cell"],
                                       embedding_dim=config["embedding_dim"] or 32,
                                       hidden_size=config["hidden_size"], num_layers=config["num_layers"],
                                       bidirectional=config["bidirectional"], merge=config["merge"],
                                       dropout=config["dropout"], tokenizer=config["tokenizer"],
                                       lower=config["lower"], dtype=config["dtype"], seed=config["seed"])
        config["_steps_per_epoch"] = len(train)
        echo(f"classifier: {config['cell']} {config['num_layers']}x{config['hidden_size']}"
             f"{' bidirectional (' + config['merge'] + ')' if config['bidirectional'] else ''}, "
             f"{model.num_parameters():,} parameters, {len(labels)} classes; {len(train)} batches per epoch")
        trainer = build_trainer(config, model, echo)
        history = trainer.fit(train, valid, epochs=config["epochs"], max_steps=config.get("max_steps"))
        metrics = evaluate_source(model, test)
        elapsed = time.perf_counter() - t0
        echo(f"test: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f} on {metrics['examples']} "
             f"examples ({elapsed:.1f} s)")
        finish_run(trainer, config, echo)
    return {"test": metrics, "history": history, "seconds": elapsed, "steps": trainer.step}


def _lm_eval_data(config, model):
    return lm_data(config, model)[2:]


def _classify_eval_data(config, model):
    return classify_data(config, model)[3:]


register_task("lm", run_language_model, _lm_eval_data)
register_task("classify", run_classifier, _classify_eval_data)
