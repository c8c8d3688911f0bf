"""The parameter-holding base class of every layer and model, and the ``no_grad`` switch."""

import contextlib
import threading

import numpy as np

from rnncore.nn._checks import check_finite

_state = threading.local()


def is_grad_enabled():
    """False inside ``no_grad()``: forward passes then use the inference kernels and keep nothing."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Run forward passes for inference only (no backward afterwards), in this thread."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def as_numpy(value):
    """A numpy array from an array-like or a torch tensor (without importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Module:
    """Parameters in a dict with torch.nn names, gradients in ``grads`` under the same keys.

    A module owns its own parameters (``_params``) and may hold child modules, whose keys are
    prefixed with the child's name and a dot, as in torch.nn.
    """

    def __init__(self, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.training = True
        self._params = {}
        self._grads = {}
        self._children = {}

    # -- registration --------------------------------------------------------------------------
    def _add_param(self, name, value):
        self._params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self._grads[name] = np.zeros_like(self._params[name])

    def add_module(self, name, module):
        self._children[name] = module
        return module

    def named_parameters(self):
        """(name, live array) pairs in state_dict order; updating an array in place updates the model."""
        yield from self._params.items()
        for cname, child in self._children.items():
            for name, value in child.named_parameters():
                yield f"{cname}.{name}", value

    def parameters(self):
        """The live parameter arrays, in state_dict order."""
        return [value for _, value in self.named_parameters()]

    @property
    def grads(self):
        """Gradient arrays keyed like ``state_dict``; backward adds into them."""
        grads = dict(self._grads)
        for cname, child in self._children.items():
            for name, value in child.grads.items():
                grads[f"{cname}.{name}"] = value
        return grads

    def num_parameters(self):
        return int(sum(value.size for _, value in self.named_parameters()))

    def zero_grad(self):
        for value in self._grads.values():
            value.fill(0)
        for child in self._children.values():
            child.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def free_workspaces(self):
        """Drop the arrays this module and its children keep from one training step to the next (the
        recurrent layers keep what a forward stores for its backward, ``rnncore.nn._workspace``); the next
        training step allocates them again. A pending backward is unaffected."""
        for child in self._children.values():
            child.free_workspaces()

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """A dict of copies of the parameters, keyed with torch.nn names."""
        return {name: value.copy() for name, value in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters in (cast to this module's dtype). Every key, shape and value is checked
        before anything is written, so a failed load leaves the module unchanged: a non-float
        array is a TypeError; missing or unexpected keys (with ``strict``), every shape mismatch
        and any NaN or Inf are a ValueError that lists them all."""
        if not hasattr(state_dict, "items"):
            raise TypeError("state_dict must be a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = dict(self.named_parameters())
        incoming = {str(k): as_numpy(v) for k, v in state_dict.items()}
        not_float = [f"state_dict[{k!r}] must hold floating-point values, got {v.dtype}"
                     for k, v in incoming.items() if k in own and not np.issubdtype(v.dtype, np.floating)]
        if not_float:
            raise TypeError("; ".join(not_float))
        missing = [k for k in own if k not in incoming]
        unexpected = [k for k in incoming if k not in own]
        problems = []
        if strict and (missing or unexpected):
            problems.append(f"missing keys {missing}, unexpected keys {unexpected}")
        problems += [f"state_dict[{k!r}] must have shape {own[k].shape}, got {v.shape}"
                     for k, v in incoming.items() if k in own and v.shape != own[k].shape]
        if problems:
            raise ValueError(f"state_dict does not match {type(self).__name__}: " + "; ".join(problems)
                             + " (expected keys and shapes: "
                             + ", ".join(f"{k} {v.shape}" for k, v in own.items()) + ")")
        cast = {}
        for name, value in incoming.items():
            if name in own:
                with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf: caught here
                    cast[name] = value.astype(own[name].dtype, copy=False)
                check_finite(f"state_dict[{name!r}] (as {own[name].dtype})", cast[name])
        for name, value in cast.items():
            own[name][...] = value
        self._after_load()
        return self

    def _after_load(self):
        """Hook for modules that derive state from their parameters."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self):
        return ""
