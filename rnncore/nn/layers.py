"""Feed-forward layers with torch.nn names and initialisation: Embedding, Linear, Dropout.

Each keeps what its backward needs from the last forward; backward adds parameter gradients
into ``grads`` and returns the gradient for its input.
"""

import numpy as np

from rnncore.kernels import dense
from rnncore.nn._checks import check_finite, check_finite_params, float_array, ids_array, shape_error
from rnncore.nn.module import Module, is_grad_enabled


def dropout_mask(rng, shape, p, dtype):
    """An inverted-dropout mask: 0 with probability p, else 1/(1-p)."""
    keep = 1.0 - p
    return (rng.random(shape) < keep).astype(dtype) / np.dtype(dtype).type(keep)


def _positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class Embedding(Module):
    """Lookup table: ids of any shape (...) -> vectors (..., embedding_dim). Init N(0, 1) as torch;
    the row ``padding_idx`` is zero and receives no gradient. ``check_finite=True`` rejects NaN/Inf
    in the weights at every forward."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32, seed=None,
                 check_finite=False):
        super().__init__(dtype)
        self.check_finite = bool(check_finite)
        self.num_embeddings = _positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must lie in [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        weight = np.random.default_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        self._add_param("weight", weight)
        self._ids = None

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}, dtype={self.dtype.name}"

    def forward(self, ids):
        ids = ids_array("ids", ids, self.num_embeddings)
        if self.check_finite:
            check_finite_params(self)
        if is_grad_enabled():  # under no_grad() the pending backward is left alone
            self._ids = ids
        return self._params["weight"][ids]

    def backward(self, grad_out):
        """Adds into grads['weight']; ids have no gradient, so this returns None."""
        if self._ids is None:
            raise RuntimeError("Embedding.backward needs a forward pass run outside no_grad() first")
        ids = self._ids
        grad_out = float_array("grad_out", grad_out, self.dtype)
        if grad_out.shape != ids.shape + (self.embedding_dim,):
            raise shape_error("grad_out", ids.shape + (self.embedding_dim,), grad_out.shape)
        flat_ids = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
        flat_grad = np.ascontiguousarray(grad_out.reshape(-1, self.embedding_dim))
        padding = -1 if self.padding_idx is None else self.padding_idx
        bad = dense.embedding_backward(self._grads["weight"], flat_ids, flat_grad, padding)
        if bad >= 0:  # the caller changed the ids array after the forward; no gradient was added
            raise ValueError(f"the ids of the forward must lie in [0, {self.num_embeddings}) at backward, "
                             f"got {flat_ids[bad]} at flat index {bad}")
        self._ids = None


class Linear(Module):
    """y = x W^T + b over the last axis; x (..., in_features) -> (..., out_features).
    Init U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, as torch. ``check_finite=True`` rejects
    NaN/Inf in the input and the weights at every forward."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None, check_finite=False):
        super().__init__(dtype)
        self.check_finite = bool(check_finite)
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.bias = bool(bias)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-bound, bound, (self.out_features, self.in_features)))
        if self.bias:
            self._add_param("bias", rng.uniform(-bound, bound, (self.out_features,)))
        self._x = None

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias}, dtype={self.dtype.name}"

    def forward(self, x):
        x = float_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise shape_error("x", f"(..., in_features={self.in_features})", x.shape)
        if self.check_finite:
            check_finite("x", x)
            check_finite_params(self)
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))  # (N, I)
        if is_grad_enabled():
            self._x = x2, x.shape[:-1]
        y = np.empty((x2.shape[0], self.out_features), dtype=self.dtype)
        if x2.shape[0]:
            dense.linear_forward(y, x2, self._params["weight"], self._bias_or_none(self._params))
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def _bias_or_none(self, arrays):
        """arrays["bias"], or an empty array for a layer without bias (what the dense kernels take)."""
        return arrays["bias"] if self.bias else np.empty(0, dtype=self.dtype)

    def backward(self, grad_out):
        if self._x is None:
            raise RuntimeError("Linear.backward needs a forward pass run outside no_grad() first")
        x2, lead = self._x
        grad_out = float_array("grad_out", grad_out, self.dtype)
        if grad_out.shape != lead + (self.out_features,):
            raise shape_error("grad_out", lead + (self.out_features,), grad_out.shape)
        g2 = np.ascontiguousarray(grad_out.reshape(-1, self.out_features))  # (N, O)
        dx = np.empty((x2.shape[0], self.in_features), dtype=self.dtype)  # written whole by the kernel
        if x2.shape[0]:
            dense.linear_backward(dx, self._grads["weight"], self._bias_or_none(self._grads), g2, x2,
                                  self._params["weight"])
        self._x = None
        return dx.reshape(lead + (self.in_features,))


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest by
    1/(1-p); the identity in eval mode. Masks come from a generator seeded by ``seed``."""

    def __init__(self, p=0.5, seed=None, dtype=np.float32):
        super().__init__(dtype)
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p!r}")
        self.p = float(p)
        self._rng = np.random.default_rng(seed)
        self._mask = None

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        x = float_array("x", x, self.dtype)
        if not self.training or self.p == 0.0:
            if is_grad_enabled():
                self._mask = None
            return x
        mask = dropout_mask(self._rng, x.shape, self.p, self.dtype)
        if is_grad_enabled():
            self._mask = mask
        return x * mask

    def backward(self, grad_out):
        grad_out = float_array("grad_out", grad_out, self.dtype)
        if self._mask is None:
            return grad_out
        if grad_out.shape != self._mask.shape:
            raise shape_error("grad_out", self._mask.shape, grad_out.shape)
        return grad_out * self._mask


