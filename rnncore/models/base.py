"""The shared base of the task models, and the pieces they are built from.

A task model is a ``Module`` (parameters with torch.nn-style dotted names, ``grads``, ``zero_grad``,
``state_dict``) that also knows how to rebuild itself and how to train on a batch:

- **Config**: ``model.config`` is a JSON-ready dict of the constructor's keyword arguments (the
  vocabularies excluded); ``model.vocabs`` maps the constructor's vocabulary arguments (listed in the
  class's ``vocab_args``; those given as None are left out) to ``Vocab`` objects.
  ``cls.from_config(config, vocabs)`` rebuilds the
  model (``TaskModel.from_config`` dispatches on ``config["kind"]`` through the registry of
  subclasses, keyed by their ``kind``).
- **Save / load**: ``model.save(dir)`` and ``TaskModel.load(dir)`` go through
  ``rnncore.train.checkpoint`` (weights in safetensors under the torch.nn names, config and
  vocabularies in JSON, written atomically).
- **Training**: ``loss_and_backward(batch, state=None)`` runs forward, loss and backward on one
  ``rnncore.data.Batch`` and ADDS the parameter gradients into ``grads`` (the caller zeroes them).
  ``evaluate(batch, state=None)`` runs the forward and loss only, with the inference kernels.
  Both return a ``StepResult``: the batch's mean loss, the number of items it averages over, the
  final recurrent state (for models that carry state across batches, such as a language model
  trained with truncated BPTT; None otherwise) and a dict of sums that ``metrics`` turns into the
  reported numbers. The state passed in is used as the initial state and never receives gradient.
- **Command line**: ``read_eval_data(path)`` and ``predict_lines(lines)`` serve ``rnncore evaluate``
  and ``rnncore predict`` for any task model that implements them.
- **Randomness**: ``rng_state()`` / ``set_rng_state()`` save and restore the generators of every
  dropout in the model, so a resumed run draws the same masks as an uninterrupted one.

A subclass sets ``kind``, ``vocab_args``, calls ``super().__init__(config, vocabs, dtype)`` with its
own keyword arguments, builds its layers with ``add_module``, and implements ``loss_and_backward``
and ``evaluate`` (and, if its metrics are not just the mean loss, ``metrics``).
"""

import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from rnncore.nn.module import Module
from rnncore.nn.recurrent import GRU, LSTM, RNN

__all__ = ["CELLS", "MERGE_MODES", "DirectionMerge", "StepResult", "TaskModel", "copy_state",
           "make_recurrent", "top_layer_final"]

CELLS = ("rnn", "rnn_relu", "lstm", "gru", "lstm_ln", "gru_ln")  # *_ln: layer_norm=True
MERGE_MODES = ("concat", "sum", "product")


@dataclass
class StepResult:
    """What one training or evaluation step reports.

    loss: the batch's mean loss (its gradient is the one taken, unless the model documents another
          reduction, as LanguageModel's reduction="sum").
    count: how many items that mean is over (tokens, sequences, ...), to weight batches.
    state: the final recurrent state to carry to the next batch, or None.
    sums: additive statistics, e.g. {"loss": summed loss, "count": n, "correct": k}; totals over an
          epoch go to ``TaskModel.metrics``.
    """

    loss: float
    count: int
    state: object = None
    sums: dict = field(default_factory=dict)


class TaskModel(Module):
    """Base of the task models; see the module docstring for the contract."""

    kind = None
    vocab_args = ()
    registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            TaskModel.registry[cls.kind] = cls

    def __init__(self, config, vocabs=None, dtype=np.float32):
        super().__init__(dtype)
        config = dict(config)
        config["dtype"] = np.dtype(dtype).name
        self.config = config
        self.vocabs = {name: v for name, v in (vocabs or {}).items() if v is not None}

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "seed")

    # -- rebuilding --------------------------------------------------------------------------------
    def get_config(self):
        """The JSON-ready constructor arguments, with ``kind`` for the registry."""
        return {"kind": self.kind, **self.config}

    @classmethod
    def from_config(cls, config, vocabs=None):
        """Rebuild a model (fresh weights) from ``get_config()`` and its vocabularies (``Vocab``
        objects or their ``to_dict()`` forms). On ``TaskModel`` it dispatches on ``config["kind"]``."""
        from rnncore.data.vocab import Vocab

        config = dict(config)
        kind = config.pop("kind", cls.kind)
        target = cls
        if cls.kind is None or (kind is not None and kind != cls.kind):
            if kind not in TaskModel.registry:
                _import_builtin_models()
            if kind not in TaskModel.registry:
                raise ValueError(f"unknown model kind {kind!r}; known: {sorted(TaskModel.registry)}")
            target = TaskModel.registry[kind]
        vocabs = {name: v if v is None or isinstance(v, Vocab) else Vocab.from_dict(v)
                  for name, v in (vocabs or {}).items()}
        params = inspect.signature(target.__init__).parameters
        known = [p for p in params if p != "self" and p not in target.vocab_args]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"config for {target.__name__} ({kind!r}) has unknown keys {unknown}; "
                             f"known keys: {sorted(known)}")
        missing = [name for name in known if params[name].default is inspect.Parameter.empty
                   and params[name].kind is not inspect.Parameter.VAR_KEYWORD and name not in config]
        if missing:
            raise ValueError(f"config for {target.__name__} ({kind!r}) lacks the keys {missing}")
        required = [name for name in target.vocab_args
                    if params[name].default is inspect.Parameter.empty and name not in vocabs]
        if required:
            raise ValueError(f"{target.__name__} needs the vocabularies {required}, got {sorted(vocabs)}")
        unknown = sorted(set(vocabs) - set(target.vocab_args))
        if unknown:
            raise ValueError(f"{target.__name__} takes the vocabularies {list(target.vocab_args)}, "
                             f"got unknown ones {unknown}")
        return target(**vocabs, **config)

    def save(self, path, **kwargs):
        """Write this model (weights, config, vocabularies) to the checkpoint directory ``path``."""
        from rnncore.train.checkpoint import save_model

        return save_model(self, path, **kwargs)

    @classmethod
    def load(cls, path):
        """The model saved in the checkpoint directory ``path``."""
        from rnncore.train.checkpoint import load_model

        model = load_model(path)
        if cls.kind is not None and not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # -- training and evaluation -----------------------------------------------------------------
    def loss_and_backward(self, batch, state=None):
        """Forward, loss and backward on ``batch``; parameter gradients are added into ``grads``.
        Returns a ``StepResult``."""
        raise NotImplementedError

    def evaluate(self, batch, state=None):
        """Forward and loss only (inference kernels, no dropout applied by the caller's eval()).
        Returns a ``StepResult``."""
        raise NotImplementedError

    def metrics(self, sums):
        """Reported numbers from summed ``StepResult.sums``: at least ``loss`` (the mean)."""
        count = max(sums.get("count", 0), 1)
        return {"loss": sums.get("loss", 0.0) / count}

    # -- command-line hooks (``rnncore evaluate`` / ``rnncore predict``) ---------------------------
    def read_eval_data(self, path, batch_size=64):
        """A source (``batches(epoch)``, ``len()``) over the data file ``path`` in this task's format,
        encoded with this model's vocabularies, for ``rnncore.train.loop.evaluate_source``."""
        raise NotImplementedError(f"{type(self).__name__} cannot read evaluation data files")

    def predict_lines(self, lines, **options):
        """One output string per input line (the task's prediction for it)."""
        raise NotImplementedError(f"{type(self).__name__} has no line-by-line prediction")

    # -- randomness ------------------------------------------------------------------------------
    def _generators(self, prefix="", module=None):
        module = self if module is None else module
        rng = getattr(module, "_rng", None)
        if isinstance(rng, np.random.Generator):
            yield prefix or ".", rng
        for name, child in getattr(module, "_children", {}).items():
            yield from self._generators(f"{prefix}{name}.", child)
        layer = getattr(module, "_layer", None)  # the cells wrap a layer
        if isinstance(layer, Module):
            yield from self._generators(f"{prefix}_layer.", layer)

    def rng_state(self):
        """The state of every random generator in the model (dropout masks), JSON-ready."""
        return {name: rng.bit_generator.state for name, rng in self._generators()}

    def set_rng_state(self, states):
        gens = dict(self._generators())
        for name, state in states.items():
            if name not in gens:
                raise ValueError(f"no random generator {name!r} in {type(self).__name__}")
            gens[name].bit_generator.state = state


def _import_builtin_models():
    """Import the modules that define the built-in model kinds, so the registry knows them."""
    import importlib

    for name in ("language_model", "classifier", "tagger", "seq2seq", "conditioned"):
        try:
            importlib.import_module(f"rnncore.models.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"rnncore.models.{name}":
                raise


# -- building blocks ------------------------------------------------------------------------------
def make_recurrent(cell, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                   dtype=np.float32, seed=None, lstm_options=None):
    """An RNN (``rnn`` = tanh, ``rnn_relu``), LSTM or GRU layer, time-major; ``lstm_ln`` and ``gru_ln``
    are the layer-normalised LSTM and GRU (``layer_norm=True``). ``lstm_options``: the LSTM variant
    keyword arguments (proj_size, peephole, gate_clip, coupled_input_forget, unit_forget_bias)."""
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, dtype=dtype, seed=seed)
    if lstm_options:
        if cell != "lstm":
            raise ValueError(f"lstm_options apply to cell='lstm' only, got cell={cell!r}")
        unknown = sorted(set(lstm_options) - set(LSTM.VARIANT_DEFAULTS))
        if unknown:
            raise ValueError(f"lstm_options: unknown options {unknown}; known: {list(LSTM.VARIANT_DEFAULTS)}")
        return LSTM(input_size, hidden_size, **kwargs, **lstm_options)
    if cell == "rnn":
        return RNN(input_size, hidden_size, nonlinearity="tanh", **kwargs)
    if cell == "rnn_relu":
        return RNN(input_size, hidden_size, nonlinearity="relu", **kwargs)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, **kwargs)
    if cell == "gru":
        return GRU(input_size, hidden_size, **kwargs)
    if cell in ("lstm_ln", "gru_ln"):
        return (LSTM if cell == "lstm_ln" else GRU)(input_size, hidden_size, layer_norm=True, **kwargs)
    raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")


def copy_state(state):
    """A copy of a recurrent state (an array, a tuple of arrays, or None): what a truncated-BPTT
    step carries into the next chunk, cut off from the previous chunk's graph."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.array(s, copy=True) for s in state)
    return np.array(state, copy=True)


def top_layer_final(h_n, num_layers, num_directions):
    """The last layer's final states, (B, D*H): forward then reverse direction concatenated.
    h_n is (D*num_layers, B, H), ordered layer 0 forward, layer 0 reverse, layer 1 forward, ..."""
    top = h_n[(num_layers - 1) * num_directions:]
    return np.concatenate(list(top), axis=-1) if num_directions > 1 else top[0]


def top_layer_final_backward(grad, num_layers, num_directions, hidden_size):
    """The gradient for h_n (D*num_layers, B, H) from the gradient of ``top_layer_final`` (B, D*H)."""
    B = grad.shape[0]
    out = np.zeros((num_directions * num_layers, B, hidden_size), dtype=grad.dtype)
    for d in range(num_directions):
        out[(num_layers - 1) * num_directions + d] = grad[:, d * hidden_size:(d + 1) * hidden_size]
    return out


class DirectionMerge:
    """Merge the two directions of a bidirectional output (..., 2H) into (..., 2H) (``concat``, the
    identity) or (..., H) (``sum``, ``product``). ``backward`` maps the merged gradient back. With
    one direction every mode is the identity."""

    def __init__(self, mode="concat", bidirectional=True):
        if mode not in MERGE_MODES:
            raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")
        self.mode, self.bidirectional = mode, bool(bidirectional)
        self._saved = None

    def output_size(self, hidden_size):
        return 2 * hidden_size if self.bidirectional and self.mode == "concat" else hidden_size

    def forward(self, out, keep=True):
        if not self.bidirectional or self.mode == "concat":
            return out
        H = out.shape[-1] // 2
        fwd, rev = out[..., :H], out[..., H:]
        if self.mode == "sum":
            return fwd + rev
        self._saved = (fwd, rev) if keep else None
        return fwd * rev

    def backward(self, grad):
        if not self.bidirectional or self.mode == "concat":
            return grad
        if self.mode == "sum":
            return np.concatenate([grad, grad], axis=-1)
        fwd, rev = self._saved
        self._saved = None
        return np.concatenate([grad * rev, grad * fwd], axis=-1)


def perplexity(mean_nll):
    """exp(mean negative log-likelihood), inf on overflow."""
    return math.exp(mean_nll) if mean_nll < 700 else math.inf
