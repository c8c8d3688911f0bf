"""Optimizers with torch.optim's update rules: SGD (momentum, Nesterov), Adam, AdamW, Adagrad, RMSprop.

An optimizer holds live references to parameter arrays and their gradient arrays and updates the
parameters in place. Build it from a model (any ``Module``: its ``named_parameters()`` and
``grads``) or from an iterable of ``(name, param, grad)`` triples::

    opt = Adam(model, lr=1e-3)
    model.zero_grad()            # or opt.zero_grad()
    model.loss_and_backward(batch)
    opt.step()

``weight_decay`` is L2 coupled into the gradient (g += wd * p) for every optimizer but AdamW,
whose decay is decoupled (p *= 1 - lr * wd), as in torch. ``lr`` is an attribute a schedule may
set before each ``step()``; ``initial_lr`` keeps the value given at construction.

Every update is computed in the parameter's dtype (float32 or float64). ``state_dict()`` returns
``{"name", "hyper", "step", "buffers"}``: JSON-ready numbers and a flat dict of arrays keyed
``"<buffer>/<param name>"``, which ``rnncore.train.checkpoint`` writes to safetensors.
"""

import numpy as np

from rnncore.nn._checks import check_finite

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "OPTIMIZERS", "make_optimizer",
           "param_triples"]


def param_triples(params):
    """``[(name, param, grad), ...]`` from a Module or an iterable of triples (live arrays)."""
    if hasattr(params, "named_parameters") and hasattr(params, "grads"):
        grads = params.grads
        triples = [(name, value, grads[name]) for name, value in params.named_parameters()]
    else:
        triples = [tuple(t) for t in params]
    seen = set()
    for t in triples:
        if len(t) != 3:
            raise ValueError("params must be a Module or an iterable of (name, param, grad) triples")
        name, p, g = t
        if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
            raise TypeError(f"{name}: param and grad must be numpy arrays")
        if p.dtype.kind != "f":
            raise TypeError(f"{name}: param must be a floating-point array (updated in place), got {p.dtype}")
        if p.shape != g.shape or p.dtype != g.dtype:
            raise ValueError(f"{name}: grad {g.shape} {g.dtype} does not match param {p.shape} {p.dtype}")
        if name in seen:
            raise ValueError(f"duplicate parameter name {name!r}")
        seen.add(name)
    if not triples:
        raise ValueError("optimizer got no parameters")
    return triples


def _number(name, value, expected):
    if isinstance(value, (bool, str, bytes)) or not np.ndim(value) == 0:
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None


def _nonneg(name, value):
    value = _number(name, value, "a finite number >= 0")
    if not value >= 0.0 or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _unit(name, value):
    value = _number(name, value, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return value


class Optimizer:
    """Base class: parameters, learning rate, weight decay, per-parameter buffers and the step count.

    A subclass lists its hyper-parameters in ``hyper_names`` and its per-parameter buffers in
    ``buffer_names`` and implements ``_update(p, g, buffers, step)`` with in-place array operations
    (``g`` is the gradient after coupled weight decay; ``step`` counts from 1).
    """

    hyper_names = ()
    buffer_names = ()
    decoupled_weight_decay = False

    def __init__(self, params, lr, weight_decay=0.0):
        self.params = param_triples(params)
        self.lr = _nonneg("lr", lr)
        self.initial_lr = self.lr
        self.weight_decay = _nonneg("weight_decay", weight_decay)
        self.step_count = 0
        self.buffers = {name: {} for name in self.buffer_names}

    def __repr__(self):
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in ("lr", "weight_decay") + self.hyper_names)
        return f"{type(self).__name__}({hyper})"

    def zero_grad(self):
        for _, _, g in self.params:
            g.fill(0)

    def _buffer(self, kind, name, p):
        buf = self.buffers[kind].get(name)
        if buf is None:
            buf = self.buffers[kind][name] = np.zeros_like(p)
        return buf

    def step(self):
        """Apply one update to every parameter from its current gradient."""
        self.step_count += 1
        for name, p, g in self.params:
            dtype = p.dtype.type
            if self.weight_decay and self.decoupled_weight_decay:
                p *= dtype(1.0 - self.lr * self.weight_decay)
            if self.weight_decay and not self.decoupled_weight_decay:
                g = g + dtype(self.weight_decay) * p
            bufs = {kind: self._buffer(kind, name, p) for kind in self.buffer_names}
            self._update(p, g, bufs, self.step_count)

    def _update(self, p, g, buffers, step):
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self):
        """JSON-ready hyper-parameters and step, and the buffers as a flat dict of array copies."""
        hyper = {"lr": self.lr, "initial_lr": self.initial_lr, "weight_decay": self.weight_decay}
        hyper.update({k: getattr(self, k) for k in self.hyper_names})
        buffers = {f"{kind}/{name}": buf.copy() for kind, bufs in self.buffers.items()
                   for name, buf in bufs.items()}
        return {"name": type(self).__name__, "hyper": hyper, "step": self.step_count, "buffers": buffers}

    def load_state_dict(self, state):
        """Restore hyper-parameters, step and buffers; every buffer is checked before anything is set."""
        if state.get("name", type(self).__name__) != type(self).__name__:
            raise ValueError(f"optimizer state is for {state['name']}, not {type(self).__name__}")
        known = {"lr", "initial_lr", "weight_decay", *self.hyper_names}
        unknown = sorted(set(state.get("hyper", {})) - known)
        if unknown:
            raise ValueError(f"optimizer state for {type(self).__name__} has unknown hyper-parameters "
                             f"{unknown}; known: {sorted(known)}")
        shapes = {name: p for name, p, _ in self.params}
        new = {kind: {} for kind in self.buffer_names}
        for key, value in state.get("buffers", {}).items():
            kind, _, name = key.partition("/")
            if kind not in new or name not in shapes:
                raise ValueError(f"optimizer state has an unknown buffer {key!r}")
            value = np.asarray(value)
            if value.shape != shapes[name].shape:
                raise ValueError(f"optimizer buffer {key!r} has shape {value.shape}, "
                                 f"expected {shapes[name].shape}")
            new[kind][name] = np.array(value, dtype=shapes[name].dtype, order="C")
            check_finite(f"optimizer buffer {key!r}", new[kind][name])
        hyper = dict(state.get("hyper", {}))
        for key in ("lr", "initial_lr", "weight_decay"):
            if key in hyper:
                hyper[key] = _nonneg(f"optimizer state hyper-parameter {key}", hyper[key])
        for key, value in hyper.items():
            setattr(self, key, value)
        self.step_count = int(state.get("step", 0))
        self.buffers = new
        return self


class SGD(Optimizer):
    """p -= lr * d, with d = g, or with momentum mu a buffer b = mu * b + (1 - dampening) * g
    (b = g at the first step) and d = b, or d = g + mu * b with ``nesterov=True`` (torch's form)."""

    hyper_names = ("momentum", "dampening", "nesterov")
    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _unit("momentum", momentum)
        self.dampening = _unit("dampening", dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        if self.momentum == 0.0:
            self.buffer_names = ()
            self.buffers = {}

    def _update(self, p, g, buffers, step):
        dtype = p.dtype.type
        if self.momentum:
            buf = buffers["momentum_buffer"]
            if step == 1:
                buf[...] = g
            else:
                buf *= dtype(self.momentum)
                buf += dtype(1.0 - self.dampening) * g
            g = g + dtype(self.momentum) * buf if self.nesterov else buf
        p -= dtype(self.lr) * g


class Adam(Optimizer):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    hyper_names = ("betas", "eps")
    buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if np.ndim(betas) != 1 or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = betas
        self.betas = [_unit("betas[0]", b1), _unit("betas[1]", b2)]
        self.eps = _nonneg("eps", eps)

    def _update(self, p, g, buffers, step):
        dtype = p.dtype.type
        b1, b2 = self.betas
        m, v = buffers["exp_avg"], buffers["exp_avg_sq"]
        m *= dtype(b1)
        m += dtype(1.0 - b1) * g
        v *= dtype(b2)
        v += dtype(1.0 - b2) * (g * g)
        bc1 = 1.0 - b1 ** step
        bc2 = 1.0 - b2 ** step
        denom = np.sqrt(v / dtype(bc2))
        denom += dtype(self.eps)
        p -= dtype(self.lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class Adagrad(Optimizer):
    """s += g^2; p -= lr * g / (sqrt(s) + eps) (torch's form; ``initial_accumulator_value`` starts s)."""

    hyper_names = ("eps", "initial_accumulator_value")
    buffer_names = ("sum",)

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0):
        super().__init__(params, lr, weight_decay)
        self.eps = _nonneg("eps", eps)
        self.initial_accumulator_value = _nonneg("initial_accumulator_value", initial_accumulator_value)

    def _buffer(self, kind, name, p):
        buf = self.buffers[kind].get(name)
        if buf is None:
            buf = self.buffers[kind][name] = np.full_like(p, self.initial_accumulator_value)
        return buf

    def _update(self, p, g, buffers, step):
        dtype = p.dtype.type
        s = buffers["sum"]
        s += g * g
        denom = np.sqrt(s)
        denom += dtype(self.eps)
        p -= dtype(self.lr) * (g / denom)


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2; with ``centered`` a = alpha a + (1 - alpha) g and v - a^2 in
    place of v; d = g / (sqrt(v) + eps); with momentum b = mu b + d, p -= lr b, else p -= lr d."""

    hyper_names = ("alpha", "eps", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.buffer_names = ("square_avg",) + (("grad_avg",) if centered else ()) + \
            (("momentum_buffer",) if momentum else ())
        super().__init__(params, lr, weight_decay)
        self.alpha = _unit("alpha", alpha)
        self.eps = _nonneg("eps", eps)
        self.momentum = _unit("momentum", momentum)
        self.centered = bool(centered)

    def _update(self, p, g, buffers, step):
        dtype = p.dtype.type
        a = dtype(self.alpha)
        v = buffers["square_avg"]
        v *= a
        v += dtype(1.0 - self.alpha) * (g * g)
        if self.centered:
            ga = buffers["grad_avg"]
            ga *= a
            ga += dtype(1.0 - self.alpha) * g
            denom = np.sqrt(v - ga * ga)
        else:
            denom = np.sqrt(v)
        denom += dtype(self.eps)
        d = g / denom
        if self.momentum:
            buf = buffers["momentum_buffer"]
            buf *= dtype(self.momentum)
            buf += d
            d = buf
        p -= dtype(self.lr) * d


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "rmsprop": RMSprop}


def make_optimizer(name, params, lr, **options):
    """An optimizer by name (``sgd``, ``adam``, ``adamw``, ``adagrad``, ``rmsprop``); options that are
    None are left at the optimizer's default."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}") from None
    return cls(params, lr=lr, **{k: v for k, v in options.items() if v is not None})
