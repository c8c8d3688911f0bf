"""Single-step cells with torch.nn names: RNNCell, LSTMCell, GRUCell.

A cell is a one-layer, one-direction recurrent layer run for one time step: it shares that
layer's kernels and parameter arrays (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``),
so there is one implementation of each cell's math. Under ``no_grad()`` it calls the generation
step kernel; otherwise it keeps what ``backward`` needs for its last call.
Shapes: x (B, I) or (I,); h, c (B, H) or (H,). ``check_finite=True`` rejects NaN/Inf in the
inputs, the states and the weights, as the layers do.
"""

import functools

import numpy as np

from rnncore.nn._checks import check_finite, check_finite_params, float_array, shape_error
from rnncore.nn.module import Module, is_grad_enabled
from rnncore.nn.recurrent import GRU, LSTM, RNN


class CellBase(Module):
    layer_class = None

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, **layer_options):
        super().__init__(dtype)
        self._layer = self.layer_class(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed,
                                       **layer_options)
        self.input_size, self.hidden_size, self.bias = self._layer.input_size, hidden_size, bool(bias)
        for key in self._layer._params:  # weight_ih_l0 -> weight_ih, ... (and an LSTM variant's extras)
            self._params[key[:-3]] = self._layer._params[key]
            self._grads[key[:-3]] = self._layer._grads[key]

    def extra_repr(self):
        return self._layer.extra_repr()

    def _states_in(self, hx, x):
        """Cell states -> the layer's (1, B, H) / (1, H) states."""
        if hx is None:
            return None
        names = self._layer.state_names
        states = (hx,) if len(names) == 1 else tuple(hx)
        out = []
        for name, s in zip(names, states):
            expected = x.shape[:-1] + (self._layer._state_size(name),)
            if s is None:
                out.append(None)
                continue
            s = float_array(name, s, self.dtype)
            if s.shape != expected:
                raise shape_error(name, expected, s.shape)
            out.append(s[None])
        return out[0] if len(out) == 1 else tuple(out)

    def forward(self, x, hx=None):
        """The new state: h' (RNNCell, GRUCell) or (h', c') (LSTMCell)."""
        x, states = self._inputs(x, hx)
        if is_grad_enabled():
            _, finals = self._layer(x[None], states)
        else:
            _, finals = self._layer.step(x, states)
        return self._drop_layer_axis(finals)

    def stepper(self):
        """``new_state = step(x, hx)``: the cell's step with nothing kept for backward, as under
        ``no_grad()``, over a snapshot of the weights taken now (``rnncore.nn.stepper``), for generation
        loops; it does not see later changes to the weights."""
        return functools.partial(self._step_on, self._layer.stepper())

    def _step_on(self, layer_stepper, x, hx=None):
        x, states = self._inputs(x, hx)
        return self._drop_layer_axis(layer_stepper.step(x, states)[1])

    def _inputs(self, x, hx):
        """x checked, and the cell's states as the layer's (``_states_in``)."""
        x = float_array("x", x, self.dtype)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise shape_error("x", f"(B, I={self.input_size}) or (I,)", x.shape)
        if self._layer.check_finite:  # here, so that the errors name the cell's shapes and parameters
            check_finite("x", x)
            check_finite_params(self)
        return x, self._states_in(hx, x)

    def backward(self, grad_state):
        """dx, dh (RNNCell, GRUCell) or dx, (dh, dc) (LSTMCell) from the gradient of the new state."""
        names = self._layer.state_names
        grads = (grad_state,) if len(names) == 1 else tuple(grad_state)
        grads = [None if g is None else np.asarray(g)[None] for g in grads]
        dx, d0 = self._layer.backward(None, self._layer._pack(grads))
        return dx[0], self._drop_layer_axis(d0)

    def _drop_layer_axis(self, states):
        """The layer's packed (1, ...) states -> the cell's."""
        return states[0] if len(self._layer.state_names) == 1 else tuple(s[0] for s in states)

    def train(self, mode=True):
        self._layer.train(mode)
        return super().train(mode)


class RNNCell(CellBase):
    """h' = act(W_ih x + b_ih + W_hh h + b_hh), act in tanh, relu, sigmoid, identity."""

    layer_class = RNN

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=np.float32, seed=None,
                 check_finite=False):
        super().__init__(input_size, hidden_size, bias, dtype, seed, nonlinearity=nonlinearity,
                         check_finite=check_finite)


class LSTMCell(CellBase):
    """LSTM step, gate order i, f, g, o: returns (h', c'). The keyword options of ``LSTM`` (proj_size,
    peephole, gate_clip, coupled_input_forget, unit_forget_bias) select the same variants; their
    parameters are named without the layer suffix (``weight_hr``, ``weight_peephole``)."""

    layer_class = LSTM

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, check_finite=False,
                 **variant_options):
        unknown = sorted(set(variant_options) - set(LSTM.VARIANT_DEFAULTS))
        if unknown:
            raise TypeError(f"LSTMCell got unexpected keyword arguments {unknown}; the variant options are "
                            f"{list(LSTM.VARIANT_DEFAULTS)}")
        super().__init__(input_size, hidden_size, bias, dtype, seed, check_finite=check_finite,
                         **variant_options)


class GRUCell(CellBase):
    """GRU step, gate order r, z, n; ``reset_after`` as in ``GRU``."""

    layer_class = GRU

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, reset_after=True,
                 check_finite=False):
        super().__init__(input_size, hidden_size, bias, dtype, seed, reset_after=reset_after,
                         check_finite=check_finite)
