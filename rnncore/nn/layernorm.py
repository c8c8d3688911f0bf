"""Layer-normalised LSTM and GRU layers: what ``LSTM(..., layer_norm=True)`` and ``GRU(..., layer_norm=True)``
build (subclasses of ``LSTM`` and ``GRU``, run by ``rnncore.kernels.layernorm_lstm`` / ``layernorm_gru``).

LSTM (Ba, Kiros & Hinton 2016):
    a = LN(W_ih x; gain_ih, beta_ih) + LN(W_hh h; gain_hh, beta_hh) + b_ih + b_hh   (rows i, f, g, o)
    c' = f * c + i * g;   h' = o * tanh(LN(c'; gain_c, beta_c))
GRU (torch's reset placement):
    a_x = LN(W_ih x; gain_ih, beta_ih) + b_ih,  a_h = LN(W_hh h; gain_hh, beta_hh) + b_hh   (rows r, z, n)
    r, z = sigmoid(a_x + a_h) rows r, z;  n = tanh(a_x[n] + r * a_h[n]);  h' = (1 - z) * n + z * h

LN(v) = gain * (v - mean(v)) / sqrt(var(v) + eps) + beta over the whole 4H (3H) vector of each
projection (one mean and variance per row, not per gate block), and over the H units of c'.

Parameters, besides torch.nn's ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
(suffix ``_reverse`` for the reverse direction), per layer and direction, in state_dict order after
that direction's torch.nn parameters: ``layernorm_ih_weight_l{k}`` / ``layernorm_ih_bias_l{k}`` (G,),
``layernorm_hh_weight_l{k}`` / ``layernorm_hh_bias_l{k}`` (G,) and, for the LSTM,
``layernorm_c_weight_l{k}`` / ``layernorm_c_bias_l{k}`` (H,); gains start at 1 and biases at 0.
``bias=False`` removes ``bias_ih``/``bias_hh`` only: the normalisations keep their biases.
"""

import math

import numpy as np

from rnncore.kernels import layernorm_gru, layernorm_lstm
from rnncore.nn.recurrent import GRU, LSTM


class _LayerNorm:
    """Parameters and weight tuples shared by the two layer-normalised layers. A subclass sets
    ``ln_parts``: the normalised quantities, each with its size in units of H."""

    ln_parts = ()

    def _joint_weights(self, layer):
        return None  # the normalisations sit between the products and the gates

    def _init_layer_norm(self, layer_norm, layer_norm_eps):
        if not layer_norm:
            raise ValueError(f"{type(self).__name__} is the layer_norm=True layer; got "
                             f"layer_norm={layer_norm!r}")
        eps = float(layer_norm_eps)
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"layer_norm_eps must be a finite number > 0, got {layer_norm_eps!r}")
        if getattr(self, "variant", False):
            raise ValueError(f"the LSTM variants {sorted(self.variant_options())} are not available with "
                             "layer_norm=True (the layer-normalised kernels implement the plain cell)")
        for name in ("recurrent_dropout", "zoneout", "zoneout_cell"):
            if getattr(self, name, 0.0):
                raise ValueError(f"{name} is not available with layer_norm=True (the layer-normalised "
                                 f"kernels have no masked form); got {name}={getattr(self, name)!r}")
        self.layer_norm = True
        self.layer_norm_eps = eps
        self._eps = self.dtype.type(eps)
        params, grads = self._params, self._grads
        self._params, self._grads = {}, {}
        for layer in range(self.num_layers):
            for suffix in self._suffixes():
                key = f"_l{layer}{suffix}"
                for name in [n for n in params if n.rpartition("_l")[2] == key[2:]]:  # torch.nn's first
                    self._params[name], self._grads[name] = params[name], grads[name]
                for part, rows in self.ln_parts:
                    size = rows * self.hidden_size
                    self._add_param(f"layernorm_{part}_weight{key}", np.ones(size))
                    self._add_param(f"layernorm_{part}_bias{key}", np.zeros(size))
        for name in params:  # anything not named by layer (none today) keeps its place at the end
            self._params.setdefault(name, params[name])
            self._grads.setdefault(name, grads[name])

    def _ln_names(self, layer, direction):
        key = f"_l{layer}{self._suffixes()[direction]}"
        return [f"layernorm_{part}_{kind}{key}" for part, _ in self.ln_parts for kind in ("weight", "bias")]

    def _weights(self, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh[, gain_c, beta_c])."""
        names = self._ln_names(layer, direction)
        return super()._weights(layer, direction) + tuple(self._params[n] for n in names)

    def _weight_grads(self, layer, direction):
        names = self._ln_names(layer, direction)
        return super()._weight_grads(layer, direction) + tuple(self._grads[n] for n in names)

    def extra_repr(self):
        eps = "" if self.layer_norm_eps == 1e-5 else f", layer_norm_eps={self.layer_norm_eps:g}"
        return super().extra_repr() + ", layer_norm=True" + eps


class LayerNormLSTM(_LayerNorm, LSTM):
    """LSTM with layer normalisation of both gate projections and of the cell state (module docstring).

    ``out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)``, as ``LSTM``.
    """

    ln_parts = (("ih", 4), ("hh", 4), ("c", 1))

    def __init__(self, *args, layer_norm=True, layer_norm_eps=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_layer_norm(layer_norm, layer_norm_eps)

    def _run_train(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        T, B = x.shape[0], lengths.shape[0]
        H = self.hidden_size
        hs, cs = self._scratch((T + 2, B, H)), self._scratch((T + 2, B, H))
        gates, xhat_ih, xhat_hh = (self._scratch((T, B, 4 * H)) for _ in range(3))
        chat = self._scratch((T, B, H))
        mean, rstd = self._scratch((3, T, B)), self._scratch((3, T, B))
        layernorm_lstm.forward_train(out, hs, cs, gates, xhat_ih, xhat_hh, chat, mean, rstd, x, lengths,
                                     s0[0], s0[1], *w, self._eps, reverse, col, row, self._given(panels))
        last = 1 if reverse else T
        finals[0][...] = hs[last]
        finals[1][...] = cs[last]
        return hs, cs, gates, xhat_ih, xhat_hh, chat, rstd

    def _run_infer(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        layernorm_lstm.forward_infer(out, finals[0], finals[1], x, lengths, s0[0], s0[1], *w, self._eps,
                                     reverse, col, row, self._given(panels))

    def _run_backward(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, reverse, col, row=0,
                      panels=None):
        # w: w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh, gain_c, beta_c
        shape = saved[2].shape  # the gates' (T, B, 4H)
        dgates, d_rec = self._scratch(shape, zero=True), self._scratch(shape, zero=True)
        d_in = self._scratch(shape)
        layernorm_lstm.backward(dx, d_s0[0], d_s0[1], *dw, dgates, d_rec, d_in, g, g_finals[0], g_finals[1],
                                x, lengths, *saved, w[0], w[1], w[4], w[6], w[8], w[9], reverse, col, row,
                                self._given(panels))

    def _run_step(self, new, x, states, w):
        layernorm_lstm.step(new[0], new[1], x, states[0], states[1], *w, self._eps)


class LayerNormGRU(_LayerNorm, GRU):
    """GRU with layer normalisation of both gate projections, torch's reset placement (module docstring).

    ``out, h_n = gru(x, h0=None, lengths=None)``, as ``GRU``.
    """

    ln_parts = (("ih", 3), ("hh", 3))

    def __init__(self, *args, layer_norm=True, layer_norm_eps=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.reset_after:
            raise ValueError("GRU(layer_norm=True) supports reset_after=True only (the reset gate multiplies "
                             "the normalised recurrent n-block); got reset_after=False")
        self._init_layer_norm(layer_norm, layer_norm_eps)

    def _run_train(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        T, B = x.shape[0], lengths.shape[0]
        H = self.hidden_size
        hs = self._scratch((T + 2, B, H))
        gates, xhat_ih, xhat_hh = (self._scratch((T, B, 3 * H)) for _ in range(3))
        aux = self._scratch((T, B, H))
        mean, rstd = self._scratch((2, T, B)), self._scratch((2, T, B))
        layernorm_gru.forward_train(out, hs, gates, aux, xhat_ih, xhat_hh, mean, rstd, x, lengths, s0[0], *w,
                                    self._eps, reverse, col, row, self._given(panels))
        finals[0][...] = hs[1] if reverse else hs[T]
        return hs, gates, aux, xhat_ih, xhat_hh, rstd

    def _run_infer(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        layernorm_gru.forward_infer(out, finals[0], x, lengths, s0[0], *w, self._eps, reverse, col, row,
                                    self._given(panels))

    def _run_backward(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, reverse, col, row=0,
                      panels=None):
        # w: w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh
        shape = saved[1].shape  # the gates' (T, B, 3H)
        d_ax, d_ah, d_rec = (self._scratch(shape, zero=True) for _ in range(3))
        layernorm_gru.backward(dx, d_s0[0], *dw, d_ax, d_ah, d_rec, self._scratch(shape), g, g_finals[0], x,
                               lengths, *saved, w[0], w[1], w[4], w[6], reverse, col, row,
                               self._given(panels))

    def _run_step(self, new, x, states, w):
        layernorm_gru.step(new[0], x, states[0], *w, self._eps)
