"""The training loop: schedule, zero, loss and backward, clip, step; validation each epoch;
a JSON-lines metrics log; checkpoints that resume to the same losses.

    trainer = Trainer(model, Adam(model, lr=2e-3), clip_norm=5.0, out_dir="runs/lm")
    history = trainer.fit(train_source, valid_source, epochs=3)

A source is any object with ``batches(epoch)`` (an iterator of ``rnncore.data.Batch``, the same for
the same epoch every time) and ``len()``: ``rnncore.data.sources`` has a truncated-BPTT stream and a
length-bucketed example source. The recurrent state a model returns is carried (copied, so no
gradient flows back into the previous batch) into its next batch until a batch has
``reset_state`` set; models that carry nothing return None.

Every step checks the loss, the gradients and the updated parameters for finiteness (NaN inside
jitted code is silent) and stops with a ``FloatingPointError`` naming the step, the epoch, the batch
and the tensor (the loss, the first parameter whose gradient or value is not finite, or whatever
array a check inside the model rejected); nothing is saved after that, so the run directory keeps
its last good checkpoint. The metrics log ``metrics.jsonl``
has one record per logged step (``{"step", "epoch", "loss", "grad_norm", "lr", "tokens_per_s"}``)
and one per validation (``{"epoch", "step", "valid_loss", ...}``); ``plot_curves`` draws it.

Resume: ``Trainer.resume(dir, ...)`` rebuilds model, optimizer state, step, epoch, position in the
epoch, carried state, the partial sums of the epoch and of the metrics window, and every random
generator from the checkpoint in ``dir``, so ``fit`` continues with exactly the batches, losses,
weights and log records of an uninterrupted run, wherever the previous process stopped (even
killed in the middle of a save: see ``rnncore.train.checkpoint``). The records a killed run logged
after its last checkpoint, and a line torn by the kill, are dropped from the metrics log.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from rnncore.models.base import copy_state
from rnncore.nn._checks import NonFiniteError, check_finite
from rnncore.nn.module import no_grad
from rnncore.threads import blas_threads
from rnncore.train.checkpoint import load_checkpoint, save_checkpoint, write_atomic
from rnncore.train.clip import clip_grad_norm, clip_grad_value, global_norm
from rnncore.train.optim import OPTIMIZERS
from rnncore.train.schedules import Constant, apply_schedule

__all__ = ["Progress", "Trainer", "blas_threads", "evaluate_source", "plot_curves", "read_metrics"]


def _state_arrays(state):
    if state is None:
        return {}
    states = state if isinstance(state, tuple) else (state,)
    return {f"carry/{i}": s for i, s in enumerate(states)}


def _state_from_arrays(arrays, as_tuple):
    parts = [arrays[f"carry/{i}"] for i in range(len([k for k in arrays if k.startswith("carry/")]))]
    if not parts:
        return None
    return tuple(parts) if as_tuple else parts[0]


def _batch_tokens(batch):
    lengths = batch.get("lengths")
    if lengths is not None:
        return int(np.sum(lengths))
    inputs = batch.get("inputs")
    return int(np.asarray(inputs).size) if inputs is not None else 0


def evaluate_source(model, source, epoch=0):
    """The model's metrics over every batch of ``source`` (inference kernels, eval mode, state
    carried as in training). The model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    totals, state = {}, None
    try:
        with no_grad():
            for batch in source.batches(epoch):
                if batch.get("reset_state", False):
                    state = None
                result = model.evaluate(batch, state)
                state = result.state
                for key, value in result.sums.items():
                    totals[key] = totals.get(key, 0) + value
    finally:
        model.train(was_training)
    return model.metrics(totals)


class Progress:
    """One status line: rewritten in place on a terminal, else printed every ``every`` steps."""

    def __init__(self, stream=None, every=50, enabled=True):
        self.stream = stream or sys.stderr
        self.every, self.enabled = max(int(every), 1), bool(enabled)
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, step, total, text):
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last > 0.1 or step == total:
                self._last = now
                self.stream.write(f"\r{step}/{total or '?'} {text}\033[K")
                self.stream.flush()
        elif step % self.every == 0 or step == total:
            self.stream.write(f"{step}/{total or '?'} {text}\n")
            self.stream.flush()

    def message(self, text):
        if self.enabled:
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()


class Trainer:
    """Trains a ``TaskModel`` with an optimizer; see the module docstring.

    schedule: a function step -> lr factor (``rnncore.train.schedules``), default constant.
    clip_norm / clip_value: clip the gradients by global norm / by value (both may be set: norm
    first); the pre-clip norm is logged either way.
    out_dir: where ``metrics.jsonl`` and the checkpoint go (nothing is written without it).
    checkpoint_every: also checkpoint every this many steps (always at the end of each epoch).
    log_every: steps between metrics records.
    diagnose_every: every this many steps, append ``rnncore.diagnostics.run.training_record`` of the
    step's batch (W_hh spectra, gate saturation, ||dL/dh_t||; eval mode, no random numbers drawn)
    to ``diagnostics.jsonl`` (None: never).
    Besides the records of ``log_every``, every step whose pre-clip norm exceeds ``clip_norm`` adds a
    clip event ``{"step", "epoch", "clipped": true, "grad_norm", "clip_norm"}`` to the metrics log.
    """

    def __init__(self, model, optimizer, schedule=None, clip_norm=None, clip_value=None, out_dir=None,
                 checkpoint_every=None, log_every=10, progress=None, run_info=None, diagnose_every=None):
        self.model, self.optimizer = model, optimizer
        self.schedule = schedule or Constant()
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.clip_value = None if clip_value is None else float(clip_value)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.checkpoint_every = checkpoint_every
        self.log_every = max(int(log_every), 1)
        self.diagnose_every = int(diagnose_every) if diagnose_every else None
        self.progress = progress if progress is not None else Progress(enabled=False)
        self.run_info = dict(run_info or {})
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.state = None
        self.history = []
        self.last_loss = None
        self.saved_step = None  # the step of the last checkpoint written or resumed from
        self._epoch_sums = [0.0, 0]  # loss sum and batches of the current epoch
        self._window = [0.0, 0, 0]  # loss sum, steps and tokens since the last metrics record
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_dir(self):
        return None if self.out_dir is None else self.out_dir / "checkpoint"

    def save(self, path=None):
        """Checkpoint model, optimizer, position and random generators (to ``out_dir/checkpoint``)."""
        path = Path(path) if path is not None else self.checkpoint_dir
        if path is None:
            raise ValueError("Trainer.save needs a path or an out_dir")
        train_state = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "model_rng": self.model.rng_state(), "history": self.history,
            "state_is_tuple": isinstance(self.state, tuple), "run": self.run_info,
            "clip_norm": self.clip_norm, "clip_value": self.clip_value,
            "epoch_sums": list(self._epoch_sums), "window": list(self._window),
        }
        out = save_checkpoint(path, self.model, self.optimizer, train_state, _state_arrays(self.state))
        self.saved_step = self.step
        return out

    @classmethod
    def resume(cls, path, schedule=None, model=None, **kwargs):
        """A trainer continuing the run checkpointed in ``path`` (a checkpoint directory, or a run
        directory holding ``checkpoint/``). Options not given are taken from the checkpoint.
        ``model``: train this instance (of the checkpoint's kind and config) instead of a new one;
        its weights are replaced by the checkpoint's."""
        path = Path(path)
        if (path / "checkpoint").is_dir():
            kwargs.setdefault("out_dir", path)
            path = path / "checkpoint"
        ckpt = load_checkpoint(path)
        if ckpt.optimizer_state is None or ckpt.train_state is None:
            raise ValueError(f"{path} holds a model but no training state to resume from")
        if model is None:
            model = ckpt.model
        elif type(model) is not type(ckpt.model) or model.get_config() != ckpt.model.get_config():
            raise ValueError(f"model: {path} holds a {type(ckpt.model).__name__} with config "
                             f"{ckpt.model.get_config()}, got a {type(model).__name__} with "
                             f"{model.get_config()}")
        else:
            model.load_state_dict(ckpt.model.state_dict())
        ts = ckpt.train_state
        try:
            opt_cls = {cls_.__name__: cls_ for cls_ in OPTIMIZERS.values()}[ckpt.optimizer_state["name"]]
            hyper = dict(ckpt.optimizer_state["hyper"])
            init = {k: v for k, v in hyper.items() if k not in ("initial_lr",)}
            init["lr"] = hyper.get("initial_lr", hyper["lr"])
            optimizer = opt_cls(model, **init)
            optimizer.load_state_dict(ckpt.optimizer_state)
            step, epoch, batch_in_epoch = int(ts["step"]), int(ts["epoch"]), int(ts["batch_in_epoch"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: the training state in the checkpoint is unusable "
                             f"({type(err).__name__}: {err})") from None
        kwargs.setdefault("clip_norm", ts.get("clip_norm"))
        kwargs.setdefault("clip_value", ts.get("clip_value"))
        kwargs.setdefault("run_info", ts.get("run"))
        trainer = cls(model, optimizer, schedule=schedule, **kwargs)
        trainer.step, trainer.epoch, trainer.batch_in_epoch = step, epoch, batch_in_epoch
        trainer.saved_step = step
        trainer.history = list(ts.get("history", []))
        trainer._epoch_sums = list(ts.get("epoch_sums", [0.0, 0]))
        window = ts.get("window", [0.0, 0, 0])
        trainer._window = [window[0], window[1], 0]  # tokens_per_s counts the tokens since the resume
        trainer.model.set_rng_state(ts.get("model_rng", {}))
        trainer.state = _state_from_arrays(ckpt.arrays, ts.get("state_is_tuple", False))
        trainer._truncate_log()
        trainer._truncate_diagnostics()
        return trainer

    # -- metrics log -------------------------------------------------------------------------------
    @property
    def metrics_path(self):
        return None if self.out_dir is None else self.out_dir / "metrics.jsonl"

    def _diagnose(self, batch, state):
        """Append ``training_record`` of this step's batch to ``diagnostics.jsonl``."""
        from rnncore.diagnostics.run import training_record

        record = {"step": self.step, "epoch": self.epoch, **training_record(self.model, batch, state)}
        if self.out_dir is not None:
            with open(self.out_dir / "diagnostics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_diagnostics(self):
        """Drop the diagnostics records written after the checkpoint."""
        path = None if self.out_dir is None else self.out_dir / "diagnostics.jsonl"
        if path is not None and path.exists():
            keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            write_atomic(path, "".join(line + "\n" for line in keep))

    def _log(self, record):
        if self.metrics_path is not None:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self):
        """Drop the records an interrupted run wrote after its checkpoint: step records past its step,
        epoch records beyond its history, and a last line torn by a kill. Rewritten atomically."""
        path = self.metrics_path
        if path is None or not path.exists():
            return
        keep, epochs = [], 0
        for record in _parse_records(path.read_bytes().decode("utf-8", errors="replace")):
            if "train_loss" in record:  # an epoch record: kept if the checkpoint's history has it
                epochs += 1
                if epochs > len(self.history):
                    continue
            elif record.get("step", 0) > self.step:
                continue
            keep.append(json.dumps(record) + "\n")
        write_atomic(path, "".join(keep))

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch):
        """One update on ``batch``; returns (loss, pre-clip gradient norm)."""
        if batch.get("reset_state", False):
            self.state = None
        apply_schedule(self.optimizer, self.schedule, self.step)
        self.model.zero_grad()
        try:
            result = self.model.loss_and_backward(batch, self.state)
        except NonFiniteError as err:  # a check inside the model: the logits, a state, a target, ...
            raise FloatingPointError(self._stop_message(str(err))) from None
        if not math.isfinite(result.loss):
            raise FloatingPointError(self._stop_message(f"the loss is {result.loss}"))
        if self.clip_norm is not None:
            norm = clip_grad_norm(self.optimizer, self.clip_norm)
            if self.clip_value is not None:
                clip_grad_value(self.optimizer, self.clip_value)
        elif self.clip_value is not None:
            norm = clip_grad_value(self.optimizer, self.clip_value)
        else:
            norm = global_norm(self.optimizer)
        if not math.isfinite(norm):
            raise FloatingPointError(self._stop_message(f"the gradient norm is {norm}: "
                                                        + self._first_non_finite("gradient", 2)))
        self.optimizer.step()
        if not all(np.isfinite(p).all() for _, p, _ in self.optimizer.params):
            raise FloatingPointError(self._stop_message("the update made the parameters non-finite: "
                                                        + self._first_non_finite("parameter", 1)
                                                        + " (the model in memory is no longer usable)"))
        self.state = copy_state(result.state)
        self.step += 1
        self.last_loss = result.loss
        return result.loss, norm

    def _first_non_finite(self, what, index):
        """'the <what> of 'name' contains NaN or Inf (first at index ...)' for the first bad array."""
        for triple in self.optimizer.params:
            try:
                check_finite(f"the {what} of {triple[0]!r}", triple[index])
            except NonFiniteError as err:
                return str(err)
        return f"every {what} is finite"  # the sum of squares overflowed

    def _stop_message(self, what):
        where = f"step {self.step + 1} (epoch {self.epoch + 1}, batch {self.batch_in_epoch + 1})"
        if self.saved_step is not None and self.checkpoint_dir is not None:
            kept = f"the last good checkpoint, step {self.saved_step}, is kept in {self.checkpoint_dir}"
        elif self.checkpoint_dir is not None:
            kept = "no checkpoint had been written yet"
        else:
            kept = "nothing was saved (no out_dir)"
        return f"{where}: {what}; training stopped, {kept}"

    def fit(self, train, valid=None, epochs=1, max_steps=None, on_epoch_end=None, on_step=None):
        """Train until ``epochs`` epochs (or ``max_steps`` steps in all) are done; validate on ``valid``
        after each epoch. ``on_step(trainer, loss, grad_norm)`` is called after every update and
        ``on_epoch_end(trainer, record)`` after every epoch. Returns the history: one dict per epoch
        (or part of an epoch, when max_steps stops inside one)."""
        n_batches = len(train)
        total = epochs * n_batches if max_steps is None else min(epochs * n_batches, max_steps)
        t_window = time.perf_counter()
        while self.epoch < epochs and (max_steps is None or self.step < max_steps):
            self.model.train()
            t_epoch = time.perf_counter()
            if self.batch_in_epoch == 0:
                self._epoch_sums = [0.0, 0]
            finished = False  # until the source runs out of batches (max_steps may stop the epoch before)
            for i, batch in enumerate(train.batches(self.epoch)):
                if i < self.batch_in_epoch:
                    continue  # resumed: these batches were trained before the checkpoint
                state_in = self.state
                loss, norm = self.train_step(batch)
                self.batch_in_epoch = i + 1
                if self.clip_norm is not None and norm > self.clip_norm:
                    self._log({"step": self.step, "epoch": self.epoch, "clipped": True, "grad_norm": norm,
                               "clip_norm": self.clip_norm})
                if self.diagnose_every and self.step % self.diagnose_every == 0:
                    t_diagnose = time.perf_counter()
                    self._diagnose(batch, state_in)
                    t_window += time.perf_counter() - t_diagnose  # not counted in tokens_per_s
                if on_step is not None:
                    on_step(self, loss, norm)
                self._window = [self._window[0] + loss, self._window[1] + 1,
                                self._window[2] + _batch_tokens(batch)]
                self._epoch_sums = [self._epoch_sums[0] + loss, self._epoch_sums[1] + 1]
                if self.step % self.log_every == 0:
                    elapsed = max(time.perf_counter() - t_window, 1e-9)
                    record = {"step": self.step, "epoch": self.epoch,
                              "loss": self._window[0] / self._window[1],
                              "grad_norm": norm, "lr": self.optimizer.lr,
                              "tokens_per_s": self._window[2] / elapsed}
                    self._log(record)
                    self._window, t_window = [0.0, 0, 0], time.perf_counter()
                    self.progress.update(self.step, total,
                                         f"epoch {self.epoch + 1} loss {record['loss']:.4f} "
                                         f"|g| {norm:.2f} lr {self.optimizer.lr:.2e} "
                                         f"{record['tokens_per_s']:,.0f} tok/s")
                if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.out_dir:
                    self.save()
                if max_steps is not None and self.step >= max_steps:
                    break
            else:
                finished = True
            record = {"epoch": self.epoch + 1, "step": self.step,
                      "train_loss": self._epoch_sums[0] / max(self._epoch_sums[1], 1),
                      "seconds": time.perf_counter() - t_epoch}
            if valid is not None and (finished or max_steps is not None):
                record.update({f"valid_{k}": v for k, v in evaluate_source(self.model, valid).items()})
            if finished:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.state = None
                self._epoch_sums = [0.0, 0]
            self.history.append(record)
            self._log(record)
            self.progress.message("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in record.items()))
            if on_epoch_end is not None:
                on_epoch_end(self, record)
            if self.out_dir is not None:
                self.save()
        return self.history


def _parse_records(text):
    """JSON records, one per line; a last line that does not parse (torn by a kill) is left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"metrics log line {i + 1} is not JSON: {line[:60]!r}") from None
    return records


def read_metrics(path):
    """The records of a metrics.jsonl file (without a last line torn by an interrupted run)."""
    return _parse_records(Path(path).read_text(encoding="utf-8", errors="replace"))


def plot_curves(metrics_path, png_path, title=None):
    """Training loss per logged step and validation loss per epoch into a PNG (matplotlib, Agg).
    Returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    steps = [r for r in records if "loss" in r]
    valid = [r for r in records if "valid_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss")
    if valid:
        ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return Path(png_path)
