"""``layer.stepper()``: generation steps over a snapshot of the weights (``rnncore.nn.stepper``).

References: the layer's own forward over the same sequence (checked against torch in
``test_torch_fixtures``, where the stepper is also run on torch's fixtures) and a float64 NumPy product
for the joint matrix. Batch sizes cover each product of ``joint_product``: 1 to MAX_ROWS rows on the
packed tile over the snapshot's panels (over large weights 1 row as one gemv, or the GRU's as two over
copies of W_ih and W_hh, 2 or 3 as one gemv per row) and more (BLAS).
"""

import numpy as np
import pytest

import rnncore
from rnncore.kernels.packed import MAX_ROWS
from rnncore.nn._checks import NonFiniteError
from rnncore.nn.stepper import GRU_ROW_ON_WEIGHTS_MIN_BYTES, side_by_side

TOL = {np.float32: 2e-5, np.float64: 1e-12}
JOINT = [(rnncore.RNN, {"nonlinearity": "tanh"}), (rnncore.RNN, {"nonlinearity": "relu"}),
         (rnncore.RNN, {"nonlinearity": "sigmoid"}), (rnncore.LSTM, {}), (rnncore.GRU, {})]
COPIED = [(rnncore.GRU, {"reset_after": False}), (rnncore.LSTM, {"proj_size": 3}),
          (rnncore.LSTM, {"peephole": True}), (rnncore.LSTM, {"layer_norm": True}),
          (rnncore.GRU, {"layer_norm": True})]


def ids(cases):
    return [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'plain'}" for cls, kw in cases]


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b))) / max(float(np.max(np.abs(b))), 1e-30)


def run_steps(step, x, state=None):
    """step(x[t], state) for every t: (outputs (T, B, H), final state)."""
    outs = []
    for t in range(x.shape[0]):
        out, state = step(x[t], state)
        outs.append(out)
    return np.stack(outs), state


def states_of(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3, 5, MAX_ROWS + 3])
@pytest.mark.parametrize(("cls", "kwargs"), JOINT + COPIED, ids=ids(JOINT + COPIED))
def test_steps_equal_the_forward(cls, kwargs, B, dtype):
    layer = cls(6, 9, num_layers=2, dtype=dtype, seed=3, **kwargs)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((5, B, 6)).astype(dtype)
    stepper = layer.stepper()
    assert stepper.joint == ((cls, kwargs) in JOINT)
    with rnncore.no_grad():
        want_out, want_state = layer(x)
    got_out, got_state = run_steps(stepper.step, x)
    assert got_out.dtype == dtype
    assert rel_err(got_out, want_out) < TOL[dtype]
    for got, want in zip(states_of(got_state), states_of(want_state), strict=True):
        assert got.shape == want.shape
        assert rel_err(got, want) < TOL[dtype]


@pytest.mark.parametrize(("cls", "kwargs"), JOINT, ids=ids(JOINT))
def test_one_stepper_for_changing_batch_sizes(cls, kwargs):
    """One stepper through steps of 1, 5, 43 and again 1, 2 and 5 rows (the panels are packed on the first
    step of 1 to MAX_ROWS rows and kept): every step as ``step`` on the parameters gives it."""
    layer = cls(6, 9, dtype=np.float64, seed=4, **kwargs)
    stepper = layer.stepper()
    rng = np.random.default_rng(7)
    for B in (1, 5, MAX_ROWS + 3, 1, 2, 5):
        x = rng.standard_normal((B, 6))
        got, _ = stepper.step(x)
        want, _ = layer.step(x)
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("cls", [rnncore.LSTM, rnncore.GRU])
def test_few_rows_over_a_large_joint_matrix(cls):
    """Over more than TWO_ROWS_MAX_BYTES of joint weights (float64, H 256: 4 MB) steps of 1 row run as one
    gemv, of 2 rows as one gemv per row and of 3 rows on the tile over panels packed at that step."""
    layer = cls(256, 256, dtype=np.float64, seed=5)
    stepper = layer.stepper()
    rng = np.random.default_rng(8)
    for B in (1, 2, 3, 2, 1):
        x = rng.standard_normal((B, 256))
        got, _ = stepper.step(x)
        want, _ = layer.step(x)
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize(("dtype", "I", "H"), [(np.float32, 40, 600), (np.float64, 24, 420)])
def test_gru_rows_past_the_bound_on_the_weights(dtype, I, H):  # noqa: E741
    """Over at least GRU_ROW_ON_WEIGHTS_MIN_BYTES of weights a GRU step of one row runs on copies of W_ih and
    W_hh, and the joint matrix is made on the first step of more rows (I != H, so that a weight read at the
    wrong offset shows): four steps of 1 row against the layer's forward over the same sequence, then steps
    of 2 rows (one product over the joint matrix) and 1 row against ``layer.step`` from the same state."""
    layer = rnncore.GRU(I, H, dtype=dtype, seed=6)
    assert 3 * H * (I + H) * np.dtype(dtype).itemsize >= GRU_ROW_ON_WEIGHTS_MIN_BYTES
    stepper = layer.stepper()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 1, I)).astype(dtype)
    with rnncore.no_grad():
        want_out, want_state = layer(x)
    got_out, got_state = run_steps(stepper.step, x)
    assert rel_err(got_out, want_out) < TOL[dtype]
    assert rel_err(got_state, want_state) < TOL[dtype]
    assert stepper._layers[0][1][0] is None  # no joint matrix made for steps of one row
    for B in (2, 1):
        xb = rng.standard_normal((B, I)).astype(dtype)
        got, _ = stepper.step(xb, got_state[:, :1].repeat(B, axis=1))
        want, _ = layer.step(xb, got_state[:, :1].repeat(B, axis=1))
        assert rel_err(got, want) < TOL[dtype]
    assert stepper._layers[0][1][0].shape == (4 * H, I + H)


@pytest.mark.parametrize(("cls", "kwargs"), JOINT, ids=ids(JOINT))
def test_unbatched_and_given_state(cls, kwargs):
    layer = cls(4, 5, dtype=np.float64, seed=1, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    h0 = rng.standard_normal((1, 5))
    state = (h0, rng.standard_normal((1, 5))) if cls is rnncore.LSTM else h0
    want_out, want_state = layer(x, state)
    got_out, got_state = run_steps(layer.stepper(), x, state)  # a Stepper is callable
    assert got_out.shape == (3, 5)
    assert rel_err(got_out, want_out) < 1e-12
    for got, want in zip(states_of(got_state), states_of(want_state), strict=True):
        assert got.shape == (1, 5)
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize(("cls", "kwargs"), JOINT + COPIED, ids=ids(JOINT + COPIED))
def test_snapshot_ignores_later_weight_changes(cls, kwargs):
    layer = cls(3, 4, dtype=np.float64, seed=2, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 3))
    before = layer.stepper()
    want, _ = before.step(x)
    for p in layer.parameters():
        p *= 0.5  # in place, as an optimizer step
    got, _ = before.step(x)
    assert np.array_equal(got, want)
    after, _ = layer.stepper().step(x)
    direct, _ = layer.step(x)
    assert not np.allclose(after, want)
    assert rel_err(after, direct) < 1e-12


@pytest.mark.parametrize("shared", [5, 2])
def test_side_by_side_layout(shared):
    rng = np.random.default_rng(0)
    G, I, H = 5, 3, 4  # noqa: E741
    w_ih, w_hh = rng.standard_normal((G, I)), rng.standard_normal((G, H))
    x, h = rng.standard_normal(I), rng.standard_normal(H)
    got = side_by_side(w_ih, w_hh, shared) @ np.concatenate([x, h])
    want = np.concatenate([(w_ih @ x + w_hh @ h)[:shared], (w_ih @ x)[shared:], (w_hh @ h)[shared:]])
    assert got.shape == (2 * G - shared,)
    assert np.allclose(got, want, rtol=0, atol=1e-13)


def test_zoneout_expectation_as_in_step():
    layer = rnncore.LSTM(3, 4, num_layers=2, zoneout=0.3, zoneout_cell=0.2, dtype=np.float64, seed=0)
    x = np.random.default_rng(2).standard_normal((4, 2, 3))
    got_out, got_state = run_steps(layer.stepper(), x)
    want_out, want_state = run_steps(layer.step, x)
    assert rel_err(got_out, want_out) < 1e-12
    for got, want in zip(got_state, want_state, strict=True):
        assert rel_err(got, want) < 1e-12


def test_bidirectional_is_refused():
    with pytest.raises(ValueError, match="bidirectional"):
        rnncore.GRU(3, 4, bidirectional=True).stepper()


def test_bad_input_names_the_argument():
    stepper = rnncore.LSTM(3, 4).stepper()
    with pytest.raises(ValueError, match=r"x.*I=3.*\(2, 5\)"):
        stepper.step(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32"):
        stepper.step(np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="h0"):
        stepper.step(np.zeros((2, 3), np.float32), (np.zeros((1, 3, 4), np.float32),) * 2)


@pytest.mark.parametrize("B", [1, 4, MAX_ROWS + 1])
@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_nan_is_visible(cls, B):
    x = np.ones((B, 3), np.float32)
    x[0, 1] = np.nan
    out, _ = cls(3, 4, seed=0).stepper().step(x)
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1:]).all()
    with pytest.raises(NonFiniteError, match="x contains NaN"):
        cls(3, 4, seed=0, check_finite=True).stepper().step(x)


@pytest.mark.parametrize("shape", [(3, 4), (4,)])
@pytest.mark.parametrize("cls", [rnncore.RNNCell, rnncore.LSTMCell, rnncore.GRUCell])
def test_cell_stepper_equals_the_cell(cls, shape):
    cell = cls(4, 5, dtype=np.float64, seed=0)
    step = cell.stepper()
    x = np.random.default_rng(3).standard_normal((6,) + shape)
    want = got = None
    for t in range(6):
        with rnncore.no_grad():
            want = cell(x[t], want)
        got = step(x[t], got)
        for g, w in zip(states_of(got), states_of(want), strict=True):
            assert g.shape == shape[:-1] + (5,)
            assert rel_err(g, w) < 1e-12
    with pytest.raises(ValueError, match=r"x.*I=4"):
        step(np.zeros(shape[:-1] + (3,)))
