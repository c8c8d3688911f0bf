"""Recurrent layers with torch.nn names, shapes and gate orders: RNN, LSTM, GRU.

A layer runs its directions and layers through the per-cell kernels (``rnncore.kernels``); this
module only validates, lays out memory, applies dropout between layers and routes gradients.
Shapes: x (T, B, I), or (B, T, I) with batch_first, or unbatched (T, I); out (T, B, D*H);
states (D*num_layers, B, H), ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...
"""

import numpy as np

from rnncore.kernels import elman, gru, lstm, packed
from rnncore.kernels.activations import NONLINEARITIES
from rnncore.nn import _shards
from rnncore.nn._checks import check_finite, check_finite_params, float_array, lengths_array, shape_error
from rnncore.nn._padding import check_padding_side, roll_padding
from rnncore.nn._workspace import Workspace
from rnncore.nn.layers import dropout_mask
from rnncore.nn.module import Module, is_grad_enabled
from rnncore.nn.regularisers import RATE_NAMES, check_rate, drop_weights, input_mask, step_masks
from rnncore.nn.stepper import GRU_ROW_ON_WEIGHTS_MIN_BYTES, Stepper, side_by_side


class RecurrentBase(Module):
    """Stacking, directions, dropout, validation and state layout shared by RNN, LSTM and GRU.

    A subclass sets ``gate_rows`` (G = gate_rows * H), ``state_names`` and the per-direction hooks
    ``_run_train``, ``_run_infer``, ``_run_backward`` and ``_run_step``, which call its kernels, and
    ``_run_masked`` / ``_run_backward_masked`` for recurrent dropout and zoneout. The first three take the
    row window (``row``) and the panels its windows share (``panels``, from ``_window_panels``) that
    ``_shards`` passes them. A cell whose step is one product over its weights side by side
    (``stepper()``) also sets ``_joint_weights`` and ``_run_joint_step``.

    Regularisers (keyword-only; definitions in ``rnncore.nn.regularisers``): ``input_dropout``,
    ``recurrent_dropout``, ``zoneout`` (h), ``zoneout_cell`` (the LSTM's c), ``weight_drop``.
    A subclass whose h is not hidden_size wide (LSTM with a projection) overrides ``_out_size`` and
    ``_state_size``; one with parameters beyond the four of torch.nn's cells, ``_extra_param_shapes``.
    """

    gate_rows = 1
    state_names = ("h",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=np.float32, seed=None, check_finite=False, *, input_dropout=0.0,
                 recurrent_dropout=0.0, zoneout=0.0, zoneout_cell=0.0, weight_drop=0.0):
        super().__init__(dtype)
        for name, value, low in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                                 ("num_layers", num_layers, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        rates = dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                     zoneout_cell=zoneout_cell, weight_drop=weight_drop)
        for name in RATE_NAMES:
            setattr(self, name, check_rate(name, rates[name]))
        if self.zoneout_cell and "c" not in self.state_names:
            raise ValueError(f"zoneout_cell applies to the LSTM's cell state; {type(self).__name__} has none "
                             f"(got zoneout_cell={zoneout_cell!r}; use zoneout for h)")
        self.num_directions = 2 if bidirectional else 1
        self.check_finite = bool(check_finite)
        self._rng = np.random.default_rng(seed)
        self._cache = None
        self._workspace = Workspace()
        self._masks = {}
        bound = 1.0 / np.sqrt(self.hidden_size)
        G = self.gate_rows * self.hidden_size
        self._zero_bias = np.zeros(G, dtype=self.dtype)
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else self.num_directions * self._out_size()
            for suffix in self._suffixes():
                shapes = {"weight_ih": (G, layer_in), "weight_hh": (G, self._out_size())}
                if self.bias:
                    shapes.update(bias_ih=(G,), bias_hh=(G,))
                shapes.update(self._extra_param_shapes())
                for kind, shape in shapes.items():
                    self._add_param(f"{kind}_l{layer}{suffix}", self._rng.uniform(-bound, bound, shape))

    def reseed(self, seed):
        """Restart the generator that draws the dropout, zoneout and weight-drop masks."""
        self._rng = np.random.default_rng(seed)

    @property
    def samples_masks(self):
        """Whether a forward in the current mode draws random masks (dropout of any kind, zoneout)."""
        rates = (self.dropout if self.num_layers > 1 else 0.0, self.input_dropout, self.recurrent_dropout,
                 self.zoneout, self.zoneout_cell, self.weight_drop)
        return self.training and any(rates)

    def last_masks(self):
        """The masks the last forward applied, by name: ``dropout_l{k}`` (T, B, I) between layers,
        ``input_l{k}`` (B, I), ``weight_hh_l{k}`` (G, H), ``recurrent_l{k}`` (B, H), ``zoneout_h_l{k}``
        and ``zoneout_c_l{k}`` (T, B, H; in eval mode the rate itself), with ``_reverse`` for the reverse
        direction; only the regularisers in use appear."""
        return dict(self._masks)

    def _suffixes(self):
        return ("", "_reverse")[: self.num_directions]

    @property
    def output_size(self):
        """The width of h and of each direction's output: hidden_size, or an LSTM's proj_size."""
        return self._out_size()

    def _out_size(self):
        """The width of h, of each direction's output columns and of the next layer's input per direction."""
        return self.hidden_size

    def _state_size(self, name):
        """The width of the state ``name`` (one of ``state_names``)."""
        return self.hidden_size

    def _extra_param_shapes(self):
        """{kind: shape} of the parameters of each layer and direction beyond weight_ih ... bias_hh."""
        return {}

    def extra_repr(self):
        extras = [f"{self.input_size}, {self.hidden_size}"]
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)) + tuple((n, 0.0) for n in RATE_NAMES):
            if getattr(self, name) != default:
                extras.append(f"{name}={getattr(self, name)}")
        return ", ".join(extras + [f"dtype={self.dtype.name}"])

    def _weights(self, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh) of one layer and direction; zeros for the biases when bias=False."""
        key = f"_l{layer}{self._suffixes()[direction]}"
        p = self._params
        if self.bias:
            return p["weight_ih" + key], p["weight_hh" + key], p["bias_ih" + key], p["bias_hh" + key]
        return p["weight_ih" + key], p["weight_hh" + key], self._zero_bias, self._zero_bias

    def _weight_grads(self, layer, direction):
        key = f"_l{layer}{self._suffixes()[direction]}"
        g = self._grads
        if self.bias:
            return g["weight_ih" + key], g["weight_hh" + key], g["bias_ih" + key], g["bias_hh" + key]
        return g["weight_ih" + key], g["weight_hh" + key], np.zeros_like(self._zero_bias), \
            np.zeros_like(self._zero_bias)

    # -- validation ----------------------------------------------------------------------------
    def _prepare_input(self, x):
        """x as a contiguous (T, B, I) array, and whether it was batched."""
        x = float_array("x", x, self.dtype)
        if x.ndim == 2:
            batched = False
            if x.shape[1] != self.input_size:
                raise shape_error("x (unbatched)", f"(T, I={self.input_size})", x.shape)
            x = x[:, None, :]
        elif x.ndim == 3:
            batched = True
            layout = "(B, T, I" if self.batch_first else "(T, B, I"
            if x.shape[2] != self.input_size:
                raise shape_error("x", f"{layout}={self.input_size})", x.shape)
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x must be 3-D {layout} or unbatched 2-D (T, I), got {x.ndim}-D shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        if self.check_finite:
            check_finite("x", x)
            check_finite_params(self)
        return np.ascontiguousarray(x), batched

    def _prepare_states(self, hx, batch, batched):
        """Initial states as a list of contiguous (D*L, B, H) arrays (zeros where hx is None)."""
        n_states = len(self.state_names)
        DL = self.num_directions * self.num_layers
        shapes = [(DL, batch, self._state_size(n)) for n in self.state_names]
        if hx is None:
            return [np.zeros(shape, dtype=self.dtype) for shape in shapes]
        if n_states == 1:
            hx = (hx,)
        elif not isinstance(hx, (tuple, list)) or len(hx) != n_states:
            raise ValueError(f"hx must be a tuple {tuple(n + '0' for n in self.state_names)} or None, got "
                             f"{type(hx).__name__}")
        states = []
        for name, h, shape in zip(self.state_names, hx, shapes):
            name = f"{name}0"
            if h is None:
                states.append(np.zeros(shape, dtype=self.dtype))
                continue
            h = float_array(name, h, self.dtype)
            expected = shape if batched else (shape[0], shape[2])
            if h.shape != expected:
                label = "(D*num_layers, B, H)" if batched else "(D*num_layers, H)"
                raise shape_error(name, f"{label} = {expected}", h.shape)
            if self.check_finite:
                check_finite(name, h)
            states.append(np.ascontiguousarray(h if batched else h[:, None, :]))
        return states

    def _prepare_grad(self, name, g, shape, batched, transpose=False):
        """A gradient argument as a contiguous array of the internal shape (zeros when None)."""
        if g is None:
            return np.zeros(shape, dtype=self.dtype)
        g = float_array(name, g, self.dtype)
        if not batched:
            expected = (shape[0], shape[2])
        elif transpose:
            expected = (shape[1], shape[0], shape[2])
        else:
            expected = shape
        if g.shape != expected:
            raise shape_error(name, expected, g.shape)
        if self.check_finite:
            check_finite(name, g)
        if not batched:
            g = g[:, None, :]
        elif transpose:
            g = g.transpose(1, 0, 2)
        return np.ascontiguousarray(g)

    # -- forward -------------------------------------------------------------------------------
    def _forward(self, x, hx, lengths):
        """Returns out in the user's layout and the list of final states."""
        x, batched = self._prepare_input(x)
        T, B, _ = x.shape
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        elif not batched:
            raise ValueError("lengths applies to batched input only; unbatched x (T, I) is one full sequence")
        else:
            lengths = lengths_array(lengths, B, T)
        states0 = self._prepare_states(hx, B, batched)
        finals = [np.empty_like(s) for s in states0]
        D, H, G = self.num_directions, self._out_size(), self.gate_rows * self.hidden_size
        keep = is_grad_enabled()
        if keep:
            self._workspace.begin()
        cache = {"layers": [], "lengths": lengths, "batched": batched, "T": T, "B": B} if keep else None
        layer_in = x
        self._masks = drawn = {}
        for layer in range(self.num_layers):
            mask = None
            if layer > 0 and self.training and self.dropout > 0.0:
                mask = drawn[f"dropout_l{layer}"] = dropout_mask(self._rng, layer_in.shape, self.dropout,
                                                                 self.dtype)
            variational = input_mask(self, layer_in.shape, drawn, f"_l{layer}")
            if variational is not None:
                mask = variational if mask is None else mask * variational
            if mask is not None:
                layer_in = layer_in * mask
            out = np.empty((T, B, D * H), dtype=self.dtype)
            saved, regs = [], []
            for d in range(D):
                idx = layer * D + d
                s0 = [s[idx] for s in states0]
                sn = [f[idx] for f in finals]
                key = f"_l{layer}{self._suffixes()[d]}"
                w, w_mask = drop_weights(self, self._weights(layer, d), drawn, key)
                masks = step_masks(self, T, B, drawn, key)
                regs.append((masks, w if w_mask is not None else None, w_mask))
                args = (out, sn, layer_in, lengths, s0, w, bool(d), d * H)
                run = self._run_train if keep else self._run_infer
                windows = self._row_windows(masks)
                shards = _shards.plan(T, B, G, layer_in.shape[2], H, keep) if windows else None
                if masks is not None:
                    kept = self._run_masked(out, sn, layer_in, lengths, s0, w, masks, bool(d), d * H)
                    saved.append(kept if keep else None)
                elif shards is not None:
                    saved.append(_shards.forward(run, shards, self._window_panels(w, False), *args))
                else:
                    saved.append(run(*args))
            if keep:
                cache["layers"].append({"x": layer_in, "mask": mask, "saved": saved, "regs": regs})
            layer_in = out
        out = layer_in
        if self.check_finite:  # first: a forward that fails leaves the pending backward as it was
            check_finite("output", out)
        if keep:  # a forward under no_grad() (in any thread) leaves the pending backward alone
            self._cache = cache
        if not batched:
            return out[:, 0, :], [f[:, 0, :] for f in finals]
        if self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, finals

    def forward(self, x, hx=None, lengths=None, padding_side="right"):
        """out, h_n (RNN, GRU) or out, (h_n, c_n) (LSTM). hx: h0, (h0, c0) or None for zeros.
        ``padding_side="left"``: sequence b's valid steps are the last lengths[b] positions of x and
        of out (zeros before them); h_n is still the state after each sequence's last step and the
        reverse direction starts there. ``backward`` then takes grad_out and returns dx in the same
        left-padded layout."""
        left = self._left_padded_lengths(x, lengths, padding_side)
        if left is not None:
            x = roll_padding(x, left, int(self.batch_first), to_right=True)
        out, finals = self._forward(x, hx, lengths)
        if left is not None:
            out = roll_padding(out, left, int(self.batch_first), to_right=False)
            if is_grad_enabled():  # the cache this forward made (a no_grad() forward leaves any alone)
                self._cache["left_lengths"] = left
        return out, self._pack(finals)

    def backward(self, grad_out=None, grad_state=None):
        """dx, dh0 (RNN, GRU) or dx, (dh0, dc0) (LSTM); None arguments count as zeros."""
        left = self._cache.get("left_lengths") if self._cache is not None else None
        if left is not None and grad_out is not None:
            grad_out = float_array("grad_out", grad_out, self.dtype)
            T, B, axis = self._cache["T"], self._cache["B"], int(self.batch_first)
            if grad_out.ndim == 3 and grad_out.shape[axis] == T and grad_out.shape[1 - axis] == B:
                if self.check_finite:
                    check_finite("grad_out", grad_out)
                grad_out = roll_padding(grad_out, left, axis, to_right=True)
        dx, d_states0 = self._backward(grad_out, grad_state)
        if left is not None:
            dx = roll_padding(dx, left, int(self.batch_first), to_right=False)
        return dx, self._pack(d_states0)

    def _left_padded_lengths(self, x, lengths, padding_side):
        """The validated lengths (B,) when x is a left-padded batch with lengths; None otherwise."""
        if check_padding_side(padding_side) == "right" or lengths is None:
            return None
        x = float_array("x", x, self.dtype)
        if x.ndim != 3:
            raise ValueError(f"padding_side='left' applies to batched 3-D x with lengths, got shape "
                             f"{x.shape}")
        if self.check_finite:
            check_finite("x", x)  # here, so that the index is the caller's, not the rolled one
        axis = int(self.batch_first)
        return lengths_array(lengths, x.shape[1 - axis], x.shape[axis])

    def _pack(self, states):
        return states[0] if len(states) == 1 else tuple(states)

    def _row_windows(self, masks):
        """Whether this pass's kernels take a window of rows (``row``), so that ``_shards`` may split the
        batch: the plain, LSTM-variant and layer-normalised kernels do, the masked ones run whole batches."""
        return masks is None

    def _window_panels(self, w, backward):
        """The panels of the recurrent product that every row window of a pass shares (``_shards``): one
        copy for all, made once, where each window packing its own cost the pack again and the L3 cache
        room of a copy (LSTM H 1024: 16 MB each). w: the weights of ``_weights``."""
        return packed.pack(w[1].T if backward else w[1], packed.MIN_ROWS)

    def free_workspaces(self):
        super().free_workspaces()
        self._workspace = Workspace()

    def _scratch(self, shape, zero=False):
        """An array of shape for a training pass: what a forward keeps for its backward, or a kernel's
        storage, reused from the previous training step (``_workspace``); any contents unless ``zero``.
        Under ``no_grad()`` (a masked forward in training mode) a new array: inference takes nothing."""
        if not is_grad_enabled():
            return np.zeros(shape, dtype=self.dtype) if zero else np.empty(shape, dtype=self.dtype)
        return self._workspace.take(shape, self.dtype, zero)

    def _give_back(self, a):
        """An array of ``_scratch`` that the pass no longer reads, for a later ``_scratch`` of the same pass
        (``Workspace.give_back``); under ``no_grad()``, where ``_scratch`` took nothing, nothing."""
        if is_grad_enabled():
            self._workspace.give_back(a)

    def _given(self, panels):
        """What the kernels take for ``panels``: the windows' shared ones, or none (each call packs)."""
        return packed.no_panels(self.dtype) if panels is None else panels

    # -- generation ----------------------------------------------------------------------------
    def step(self, x, hx=None):
        """One time step for generation with nothing kept for backward and no dropout.
        x (B, I) or (I,); hx as in ``forward``. Returns (output (B, H) or (H,), new state).
        A generation loop runs faster on ``stepper()``."""
        return self._step(x, hx, [(self._run_step, self._weights(k, 0)) for k in range(self.num_layers)])

    def stepper(self):
        """A ``Stepper`` (``rnncore.nn.stepper``): ``step`` over a snapshot of the weights taken now, each
        layer's W_ih and W_hh side by side so that a step is one product. For generation loops, whose
        weights do not change; make a new one after they do."""
        return Stepper(self)

    def _step(self, x, hx, layers):
        """``step``, layer k run as ``run(new states, x, states, w)`` with (run, w) = layers[k]."""
        if self.bidirectional:
            raise ValueError("step() runs one time step forward; a bidirectional layer needs the whole "
                             "sequence")
        x = float_array("x", x, self.dtype)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise shape_error("x", f"(B, I={self.input_size}) or (I,)", x.shape)
        batched = x.ndim == 2
        x = np.ascontiguousarray(x if batched else x[None, :])
        if self.check_finite:
            check_finite("x", x)
            check_finite_params(self)
        states = self._prepare_states(hx, x.shape[0], batched)
        new = [np.empty_like(s) for s in states]
        for layer, (run, w) in enumerate(layers):
            run([n[layer] for n in new], x, [s[layer] for s in states], w)
            for rate, n, s in zip((self.zoneout, self.zoneout_cell), new, states):
                if rate:  # zoneout's expectation, as in eval mode
                    n[layer] = rate * s[layer] + (1.0 - rate) * n[layer]
            x = new[0][layer]
        if self.check_finite:
            for name, n in zip(self.state_names, new):
                check_finite(f"new {name}", n)
        if not batched:
            return x[0], self._pack([n[:, 0, :] for n in new])
        return x.copy(), self._pack(new)

    def _step_snapshot(self, layer):
        """(run, w) for a ``Stepper``'s steps of layer ``layer``: ``_run_joint_step`` on the joint weights
        where the cell has them, else ``_run_step`` on a copy of the weights."""
        joint = self._joint_weights(layer)
        if joint is not None:
            return self._run_joint_step, joint
        return self._run_step, tuple(a.copy() for a in self._weights(layer, 0))

    def _joint_weights(self, layer):
        """What ``_run_joint_step`` runs layer ``layer`` on, copied from the parameters, or None where the
        cell's step is not one product (the default)."""
        return None

    def _side_by_side_weights(self, layer, shared):
        """[joint, None, copies of b_ih and b_hh] of the forward direction of a layer, joint =
        side_by_side(W_ih, W_hh, shared); ``_joint_args`` puts the panels in the None's place when needed."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, 0)[:4]
        return [side_by_side(w_ih, w_hh, shared), None, b_ih.copy(), b_hh.copy()]

    def _joint_args(self, joint, rows):
        """The weight arguments of a ``step_joint`` kernel for a step of ``rows`` rows: joint, its panels
        (``joint_product``: packed on the first step of a size ``packed.packs`` takes, and kept; none
        before), the biases."""
        if joint[1] is None and packed.packs(joint[0], rows):
            joint[1] = packed.pack(joint[0], packed.MIN_ROWS)
        panels = packed.no_panels(self.dtype) if joint[1] is None else joint[1]
        return joint[0], panels, joint[2], joint[3]

    # -- backward ------------------------------------------------------------------------------
    def _backward(self, grad_out, grad_states):
        """Gradients for x and the initial states; parameter gradients are added into ``grads``."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward pass run outside no_grad() "
                               "first (each forward can be backpropagated once)")
        T, B, batched = cache["T"], cache["B"], cache["batched"]
        D, H, L = self.num_directions, self._out_size(), self.num_layers
        g = self._prepare_grad("grad_out", grad_out, (T, B, D * H), batched, transpose=self.batch_first)
        state_shapes = [(D * L, B, self._state_size(n)) for n in self.state_names]
        if len(self.state_names) == 1:
            grad_states = (grad_states,)
        elif grad_states is None:
            grad_states = (None,) * len(self.state_names)
        grad_finals = [self._prepare_grad(f"grad_{n}_n", gs, shape, batched)
                       for n, gs, shape in zip(self.state_names, grad_states, state_shapes)]
        d_states0 = [np.zeros(shape, dtype=self.dtype) for shape in state_shapes]
        lengths = cache["lengths"]
        for layer in reversed(range(L)):
            entry = cache["layers"][layer]
            layer_in = entry["x"]
            dx = np.zeros_like(layer_in)
            for d in range(D):
                idx = layer * D + d
                masks, dropped_w, w_mask = entry["regs"][d]
                w = self._weights(layer, d) if dropped_w is None else dropped_w
                dw = dw_raw = self._weight_grads(layer, d)
                if w_mask is not None:  # the kernels see W_hh * mask: dW_hh(raw) = mask * dW_hh(dropped)
                    dw = (dw[0], np.zeros_like(dw[1])) + tuple(dw[2:])
                args = (dx, [ds[idx] for ds in d_states0], dw, g, [gf[idx] for gf in grad_finals], layer_in,
                        lengths, entry["saved"][d], w)
                if isinstance(entry["saved"][d], _shards.Sharded):
                    _shards.backward(self._run_backward, self._window_panels(w, True), *args, bool(d), d * H)
                elif masks is None:
                    self._run_backward(*args, bool(d), d * H)
                else:
                    self._run_backward_masked(*args, masks, bool(d), d * H)
                if w_mask is not None:
                    np.add(dw_raw[1], w_mask * dw[1], out=dw_raw[1])
            if entry["mask"] is not None:
                dx *= entry["mask"]
            g = dx
        self._cache = None
        self._workspace.release()
        if self.check_finite:
            check_finite("grad of x", g)
        if not batched:
            return g[:, 0, :], [ds[:, 0, :] for ds in d_states0]
        if self.batch_first:
            g = np.ascontiguousarray(g.transpose(1, 0, 2))
        return g, d_states0


class RNN(RecurrentBase):
    """Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act in tanh, relu, sigmoid, identity.

    ``out, h_n = rnn(x, h0=None, lengths=None)``; ``dx, dh0 = rnn.backward(grad_out, grad_h_n)``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 check_finite=False, **regularisers):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._act = NONLINEARITIES[nonlinearity]
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, check_finite, **regularisers)

    def extra_repr(self):
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def _run_train(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        T, B = x.shape[0], lengths.shape[0]
        hs = self._scratch((T + 2, B, self.hidden_size))
        pre = self._scratch((T, B, self.hidden_size))
        elman.forward_train(out, hs, pre, x, lengths, s0[0], *w, self._act, reverse, col, row,
                            self._given(panels))
        self._give_back(pre)  # the backward's da, of the same shape, then takes it
        finals[0][...] = hs[1] if reverse else hs[T]
        return hs

    def _run_infer(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        elman.forward_infer(out, finals[0], x, lengths, s0[0], *w, self._act, reverse, col, row,
                            self._given(panels))

    def _run_backward(self, dx, d_s0, dw, g, g_finals, x, lengths, hs, w, reverse, col, row=0, panels=None):
        da = self._scratch((x.shape[0], lengths.shape[0], self.hidden_size))
        elman.backward(dx, d_s0[0], *dw, da, g, g_finals[0], x, lengths, hs, w[0], w[1], self._act, reverse,
                       col, row, self._given(panels))

    def _run_step(self, new, x, states, w):
        elman.step(new[0], x, states[0], *w, self._act)

    def _joint_weights(self, layer):
        return self._side_by_side_weights(layer, self.hidden_size)

    def _run_joint_step(self, new, x, states, joint):
        elman.step_joint(new[0], x, states[0], *self._joint_args(joint, x.shape[0]), self._act)

    def _run_masked(self, out, finals, x, lengths, s0, w, masks, reverse, col):
        T, B, _ = x.shape
        hs = self._scratch((T + 2, B, self.hidden_size))
        cand, pre = (self._scratch((T, B, self.hidden_size)) for _ in range(2))
        elman.forward_masked(out, hs, cand, pre, x, lengths, s0[0], *w, masks.recurrent, masks.zone[0],
                             self._act, reverse, col)
        self._give_back(pre)  # the backward's da, of the same shape, then takes it
        finals[0][...] = hs[1] if reverse else hs[T]
        return hs, cand

    def _run_backward_masked(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, masks, reverse, col):
        hs, cand = saved
        da, h_rec = (self._scratch(cand.shape) for _ in range(2))
        elman.backward_masked(dx, d_s0[0], *dw, da, h_rec, g, g_finals[0], x, lengths, hs, cand, w[0], w[1],
                              masks.recurrent, masks.zone[0], self._act, reverse, col)



def _layer_norm_class(cls, base, layer_norm):
    """The class ``base(..., layer_norm=...)`` builds: its layer-normalised subclass (in
    ``rnncore.nn.layernorm``) when layer_norm is True."""
    if not isinstance(layer_norm, (bool, np.bool_)):
        raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
    if layer_norm and cls is base:
        from rnncore.nn import layernorm

        return getattr(layernorm, f"LayerNorm{base.__name__}")
    return cls


class LSTM(RecurrentBase):
    """LSTM with torch.nn gate order i, f, g, o.

    ``out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(grad_out, (grad_h_n, grad_c_n))``.
    ``layer_norm=True`` builds the layer-normalised LSTM, ``rnncore.nn.layernorm.LayerNormLSTM`` (equations
    and parameter names there), with epsilon ``layer_norm_eps``.

    Variants (all off by default; the default runs kernels without them). Any combination works:

    - ``proj_size`` P in [1, hidden_size): LSTM with projection, as torch.nn.LSTM(proj_size=P).
      h_t = W_hr (o_t * tanh(c_t)) with ``weight_hr_l{k}`` (P, H); h0, h_n and each direction's
      output columns are P wide, c is H wide, ``weight_hh_l{k}`` is (4H, P) and a layer above the
      first gets D*P inputs.
    - ``peephole=True``: ``weight_peephole_l{k}`` (3H,), rows p_i | p_f | p_o, added to the gate
      pre-activations as p_i * c_{t-1}, p_f * c_{t-1} and p_o * c_t (Gers & Schmidhuber). ONNX's
      LSTM input P holds the same vectors in the order i, o, f: P[d] = [p_i, p_o, p_f].
    - ``gate_clip`` (a float > 0, or None): every gate pre-activation, peephole term included, is
      clipped to [-gate_clip, gate_clip] before its sigmoid or tanh; ONNX's ``clip`` attribute. The
      cell state itself is not clipped. Outside the bounds the gradient of that gate is 0.
    - ``coupled_input_forget=True``: f_t = 1 - i_t (ONNX ``input_forget=1``). The forget rows of
      weight_ih, weight_hh, the biases (and p_f) keep their torch.nn shapes but are not used; their
      gradients stay 0.
    - ``unit_forget_bias=True`` (Keras' unit_forget_bias, Jozefowicz et al. 2015): at
      initialisation bias_ih's forget rows [H:2H] are set to 1 and bias_hh's forget rows to 0, so
      the forget gate's bias is 1. Needs bias=True and the forget gate (not coupled_input_forget).
    """

    gate_rows = 4
    state_names = ("h", "c")

    def __new__(cls, *args, layer_norm=False, **kwargs):
        return super().__new__(_layer_norm_class(cls, LSTM, layer_norm))

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=np.float32, seed=None, check_finite=False, proj_size=0,
                 peephole=False, gate_clip=None, coupled_input_forget=False, unit_forget_bias=False,
                 layer_norm=False, layer_norm_eps=1e-5, **regularisers):
        # layer_norm=True makes a LayerNormLSTM (__new__), whose __init__ takes both layer_norm options
        if not isinstance(proj_size, (int, np.integer)) or isinstance(proj_size, bool) or proj_size < 0:
            raise ValueError(f"proj_size must be an integer >= 0 (0 for no projection), got {proj_size!r}")
        if isinstance(hidden_size, (int, np.integer)) and proj_size and proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size = {hidden_size}, got {proj_size}")
        if gate_clip is not None:
            real = isinstance(gate_clip, (int, float, np.integer, np.floating))
            if not real or isinstance(gate_clip, bool) or not np.isfinite(gate_clip) or gate_clip <= 0:
                raise ValueError(f"gate_clip must be a finite number > 0 or None, got {gate_clip!r}")
            gate_clip = float(gate_clip)
        for name, value in (("peephole", peephole), ("coupled_input_forget", coupled_input_forget),
                            ("unit_forget_bias", unit_forget_bias)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if unit_forget_bias and not bias:
            raise ValueError("unit_forget_bias=True needs bias=True (it sets the forget gate's bias)")
        if unit_forget_bias and coupled_input_forget:
            raise ValueError("unit_forget_bias=True has no effect with coupled_input_forget=True "
                             "(f = 1 - i has no bias of its own)")
        self.proj_size, self.peephole, self.gate_clip = int(proj_size), bool(peephole), gate_clip
        self.coupled_input_forget, self.unit_forget_bias = bool(coupled_input_forget), bool(unit_forget_bias)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, check_finite, **regularisers)
        if self.variant and (self.recurrent_dropout or self.zoneout or self.zoneout_cell):
            raise ValueError(f"recurrent_dropout and zoneout are not available with the LSTM variants "
                             f"{sorted(k for k in self.variant_options() if k != 'unit_forget_bias')} (the "
                             "variant kernels have no masked form)")
        if self.unit_forget_bias:
            H = self.hidden_size
            for name, value in self._params.items():
                if name.startswith("bias_ih_"):
                    value[H:2 * H] = 1.0
                elif name.startswith("bias_hh_"):
                    value[H:2 * H] = 0.0
        H = self.hidden_size
        self._no_proj = np.zeros((0, H), dtype=self.dtype)
        self._no_peep = np.zeros(0, dtype=self.dtype)
        self._clip = self.dtype.type(self.gate_clip or 0.0)

    VARIANT_DEFAULTS = {"proj_size": 0, "peephole": False, "gate_clip": None, "coupled_input_forget": False,
                        "unit_forget_bias": False}

    @property
    def variant(self):
        """True when any option changes the cell's equations (then the variant kernels run)."""
        return bool(self.proj_size or self.peephole or self.gate_clip or self.coupled_input_forget)

    def variant_options(self):
        """The variant options that differ from the defaults, as constructor keyword arguments."""
        return {k: getattr(self, k) for k, v in self.VARIANT_DEFAULTS.items() if getattr(self, k) != v}

    def extra_repr(self):
        return super().extra_repr() + "".join(f", {k}={v!r}" for k, v in self.variant_options().items())

    def _out_size(self):
        return self.proj_size or self.hidden_size

    def _state_size(self, name):
        return self.hidden_size if name == "c" else self._out_size()

    def _extra_param_shapes(self):
        shapes = {}
        if self.proj_size:
            shapes["weight_hr"] = (self.proj_size, self.hidden_size)
        if self.peephole:
            shapes["weight_peephole"] = (3 * self.hidden_size,)
        return shapes

    def _variant_args(self, source, layer, direction, empty):
        """(w_hr, peep) of one layer and direction from ``source`` (params or grads); ``empty`` gives the
        stand-ins for an absent projection or peephole."""
        key = f"_l{layer}{self._suffixes()[direction]}"
        w_hr = source["weight_hr" + key] if self.proj_size else empty(self._no_proj)
        peep = source["weight_peephole" + key] if self.peephole else empty(self._no_peep)
        return w_hr, peep

    def _weights(self, layer, direction):
        w = super()._weights(layer, direction)
        return w + self._variant_args(self._params, layer, direction, lambda a: a) if self.variant else w

    def _weight_grads(self, layer, direction):
        g = super()._weight_grads(layer, direction)
        return g + self._variant_args(self._grads, layer, direction, np.zeros_like) if self.variant else g

    def _run_train(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        T, B = x.shape[0], lengths.shape[0]
        H, P = self.hidden_size, self._out_size()
        hs = self._scratch((T + 2, B, P))
        cs = self._scratch((T + 2, B, H))
        gates = self._scratch((T, B, 4 * H))
        if self.variant:
            ms = self._scratch((T, B, H))
            pre = self._scratch((T, B if self.gate_clip else 0, 4 * H))
            lstm.forward_train_variant(out, hs, cs, ms, gates, pre, x, lengths, s0[0], s0[1], *w, self._clip,
                                       self.coupled_input_forget, reverse, col, row, self._given(panels))
            saved = hs, cs, gates, ms, pre
        else:
            lstm.forward_train(out, hs, cs, gates, x, lengths, s0[0], s0[1], *w, reverse, col, row,
                               self._given(panels))
            saved = hs, cs, gates
        last = 1 if reverse else T
        finals[0][...] = hs[last]
        finals[1][...] = cs[last]
        return saved

    def _run_infer(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        if self.variant:
            lstm.forward_infer_variant(out, finals[0], finals[1], x, lengths, s0[0], s0[1], *w, self._clip,
                                       self.coupled_input_forget, reverse, col, row, self._given(panels))
        else:
            lstm.forward_infer(out, finals[0], finals[1], x, lengths, s0[0], s0[1], *w, reverse, col, row,
                               self._given(panels))

    def _run_backward(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, reverse, col, row=0,
                      panels=None):
        if self.variant:
            hs, cs, gates, ms, pre = saved
            T, B, P = gates.shape[0], gates.shape[1], hs.shape[2]
            dgates = self._scratch(gates.shape, zero=True)
            dhs = self._scratch((T if self.proj_size else 0, B, P), zero=True)  # gradients of h_t, for dW_hr
            lstm.backward_variant(dx, d_s0[0], d_s0[1], *dw, dgates, dhs, g, g_finals[0], g_finals[1], x,
                                  lengths, hs, cs, ms, gates, pre, w[0], w[1], w[4], w[5], self._clip,
                                  self.coupled_input_forget, reverse, col, row, self._given(panels))
            return
        hs, cs, gates = saved
        dgates = self._scratch(gates.shape, zero=True)
        lstm.backward(dx, d_s0[0], d_s0[1], *dw, dgates, g, g_finals[0], g_finals[1], x, lengths, hs, cs,
                      gates, w[0], w[1], reverse, col, row, self._given(panels))

    def _run_step(self, new, x, states, w):
        if self.variant:
            lstm.step_variant(new[0], new[1], x, states[0], states[1], *w, self._clip,
                              self.coupled_input_forget)
        else:
            lstm.step(new[0], new[1], x, states[0], states[1], *w)

    def _joint_weights(self, layer):
        return None if self.variant else self._side_by_side_weights(layer, 4 * self.hidden_size)

    def _run_joint_step(self, new, x, states, joint):
        lstm.step_joint(new[0], new[1], x, states[0], states[1], *self._joint_args(joint, x.shape[0]))

    def _run_masked(self, out, finals, x, lengths, s0, w, masks, reverse, col):
        T, B, _ = x.shape
        H = self.hidden_size
        hs, cs = (self._scratch((T + 2, B, H)) for _ in range(2))
        cand_h, cand_c = (self._scratch((T, B, H)) for _ in range(2))
        gates = self._scratch((T, B, 4 * H))
        lstm.forward_masked(out, hs, cs, cand_h, cand_c, gates, x, lengths, s0[0], s0[1], *w, masks.recurrent,
                            *masks.zone, reverse, col)
        last = 1 if reverse else T
        finals[0][...] = hs[last]
        finals[1][...] = cs[last]
        return hs, cs, cand_c, gates

    def _run_backward_masked(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, masks, reverse, col):
        hs, cs, cand_c, gates = saved
        dgates, h_rec = self._scratch(gates.shape, zero=True), self._scratch(cand_c.shape)
        lstm.backward_masked(dx, d_s0[0], d_s0[1], *dw, dgates, h_rec, g, g_finals[0], g_finals[1], x,
                             lengths, hs, cs, cand_c, gates, w[0], w[1], masks.recurrent, *masks.zone,
                             reverse, col)



class GRU(RecurrentBase):
    """GRU with torch.nn gate order r, z, n. ``reset_after=True`` (default) is torch's placement,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); ``False`` is the original, W_hn (r * h).

    ``out, h_n = gru(x, h0=None, lengths=None)``; ``dx, dh0 = gru.backward(grad_out, grad_h_n)``.
    ``layer_norm=True`` builds the layer-normalised GRU, ``rnncore.nn.layernorm.LayerNormGRU`` (equations
    and parameter names there), with epsilon ``layer_norm_eps``.
    """

    gate_rows = 3

    def __new__(cls, *args, layer_norm=False, **kwargs):
        return super().__new__(_layer_norm_class(cls, GRU, layer_norm))

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=np.float32, seed=None, check_finite=False, reset_after=True,
                 layer_norm=False, layer_norm_eps=1e-5, **regularisers):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, check_finite, **regularisers)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def _run_train(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        T, B = x.shape[0], lengths.shape[0]
        H = self.hidden_size
        hs = self._scratch((T + 2, B, H))
        gates = self._scratch((T, B, 3 * H))
        aux = self._scratch((T, B, H))
        gru.forward_train(out, hs, gates, aux, x, lengths, s0[0], *w, self.reset_after, reverse, col, row,
                          self._given(panels))
        finals[0][...] = hs[1] if reverse else hs[T]
        return hs, gates, aux

    def _run_infer(self, out, finals, x, lengths, s0, w, reverse, col, row=0, panels=None):
        gru.forward_infer(out, finals[0], x, lengths, s0[0], *w, self.reset_after, reverse, col, row,
                          self._given(panels))

    def _gate_grad_scratch(self, aux):
        """Zeroed storage for the backward's gate gradients (``kernels.gru.backward``): d_rz (T, B, 2H),
        dn_pre (T, B, H) and d_nrec (T, B, H), (T, B, 0) for reset_before; aux (T, B, H) from the forward."""
        T, B, H = aux.shape
        return (self._scratch((T, B, 2 * H), zero=True), self._scratch((T, B, H), zero=True),
                self._scratch((T, B, H if self.reset_after else 0), zero=True))

    def _run_backward(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, reverse, col, row=0,
                      panels=None):
        hs, gates, aux = saved
        d_rz, dn_pre, d_nrec = self._gate_grad_scratch(aux)
        gru.backward(dx, d_s0[0], *dw, d_rz, dn_pre, d_nrec, g, g_finals[0], x, lengths, hs, gates, aux, w[0],
                     w[1], self.reset_after, reverse, col, row, self._given(panels))

    def _window_panels(self, w, backward):
        if backward or self.reset_after:
            return super()._window_panels(w, backward)
        return packed.pack(w[1][: 2 * self.hidden_size], packed.MIN_ROWS)  # reset_before: the r, z rows

    def _run_step(self, new, x, states, w):
        gru.step(new[0], x, states[0], *w, self.reset_after)

    def _joint_weights(self, layer):
        """reset_after: ``_side_by_side_weights``; over GRU_ROW_ON_WEIGHTS_MIN_BYTES of W_ih and W_hh, the
        same list with the joint matrix left None and copies of W_ih and W_hh after the biases, for
        ``_run_joint_step`` (``rnncore.nn.stepper``)."""
        if not self.reset_after:
            return None
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, 0)[:4]
        if w_ih.nbytes + w_hh.nbytes < GRU_ROW_ON_WEIGHTS_MIN_BYTES:
            return self._side_by_side_weights(layer, 2 * self.hidden_size)
        return [None, None, b_ih.copy(), b_hh.copy(), w_ih.copy(), w_hh.copy()]

    def _run_joint_step(self, new, x, states, joint):
        if len(joint) > 4:  # the copies of W_ih and W_hh of ``_joint_weights``
            w_ih, w_hh = joint[4:]
            if x.shape[0] == 1:
                gru.step(new[0], x, states[0], w_ih, w_hh, joint[2], joint[3], True)
                return
            if joint[0] is None:
                joint[0] = side_by_side(w_ih, w_hh, 2 * self.hidden_size)
        gru.step_joint(new[0], x, states[0], *self._joint_args(joint, x.shape[0]))

    def _run_masked(self, out, finals, x, lengths, s0, w, masks, reverse, col):
        T, B, _ = x.shape
        H = self.hidden_size
        hs = self._scratch((T + 2, B, H))
        cand = self._scratch((T, B, H))
        gates = self._scratch((T, B, 3 * H))
        aux = self._scratch((T, B, H))
        gru.forward_masked(out, hs, cand, gates, aux, x, lengths, s0[0], *w, masks.recurrent, masks.zone[0],
                           self.reset_after, reverse, col)
        finals[0][...] = hs[1] if reverse else hs[T]
        return hs, gates, aux

    def _run_backward_masked(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, masks, reverse, col):
        hs, gates, aux = saved
        d_rz, dn_pre, d_nrec = self._gate_grad_scratch(aux)
        gru.backward_masked(dx, d_s0[0], *dw, d_rz, dn_pre, d_nrec, self._scratch(aux.shape), g, g_finals[0],
                            x, lengths, hs, gates, aux, w[0], w[1], masks.recurrent, masks.zone[0],
                            self.reset_after, reverse, col)

