"""rnncore.io.save / load: safetensors files that torch.nn loads with strict=True, and back.

Each layer kind (and three task models) goes rnncore -> file -> ``safetensors.torch.load_file`` ->
``torch.nn.X.load_state_dict(strict=True)``, and torch -> ``safetensors.torch.save_file`` ->
``rnncore.io.load``; outputs are compared with torch's forward run live (float64 within 1e-10
relative, float32 within 1e-5). Also: rebuilding from the file's metadata, dtype handling, a
transposed array through save -> load (safetensors#825), clear errors.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file as np_save_file

import rnncore
from rnncore.data import Vocab
from rnncore.io import encode_arrays, load, read_arrays, save, write_atomic
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.models.tagger import SequenceTagger

torch = pytest.importorskip("torch")
import safetensors.torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

RNG = np.random.default_rng(7)
LAYERS = [  # (rnncore class, torch class, kwargs)
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu", "bidirectional": True}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"num_layers": 3, "batch_first": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False}),
]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def tol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


def torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def run_torch_layer(module, x, lengths):
    """out (T, B, D*H) time-major (or batch-major for batch_first), h_n; lengths via packing."""
    xt = torch.from_numpy(x)
    with torch.no_grad():
        if lengths is None:
            out, state = module(xt)
        else:
            packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=module.batch_first,
                                          enforce_sorted=False)
            out, state = module(packed)
            out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=x.shape[1 if
                                         module.batch_first else 0])
    h = state[0] if isinstance(state, tuple) else state
    return out.numpy(), h.numpy()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("kind", "kwargs"), LAYERS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_layer_round_trip_through_torch(tmp_path, kind, kwargs, dtype):
    I, H, T, B = 3, 4, 5, 3
    ours = getattr(rnncore, kind)(I, H, dtype=dtype, seed=1, **kwargs)
    path = save(ours, tmp_path / "ours.safetensors")
    theirs = getattr(torch.nn, kind)(I, H, **kwargs).to(torch_dtype(dtype))
    theirs.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    x = RNG.standard_normal((B, T, I) if kwargs.get("batch_first") else (T, B, I)).astype(dtype)
    lengths = [5, 2, 4]
    with rnncore.no_grad():
        out, state = ours(x, lengths=lengths)
    h = state[0] if isinstance(state, tuple) else state
    t_out, t_h = run_torch_layer(theirs, x, lengths)
    assert rel_err(out, t_out) < tol(dtype) and rel_err(h, t_h) < tol(dtype)

    # and back: new torch weights -> torch's own safetensors writer -> rnncore
    for p in theirs.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    safetensors.torch.save_file(theirs.state_dict(), str(tmp_path / "theirs.safetensors"))
    back = load(tmp_path / "theirs.safetensors", getattr(rnncore, kind)(I, H, dtype=dtype, seed=9, **kwargs))
    with rnncore.no_grad():
        out, state = back(x, lengths=lengths)
    h = state[0] if isinstance(state, tuple) else state
    t_out, t_h = run_torch_layer(theirs, x, lengths)
    assert rel_err(out, t_out) < tol(dtype) and rel_err(h, t_h) < tol(dtype)


@pytest.mark.parametrize(("kind", "kwargs"), [("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
                                              ("GRUCell", {})])
def test_cells_round_trip_through_torch(tmp_path, kind, kwargs):
    ours = getattr(rnncore, kind)(3, 4, dtype=np.float64, seed=2, **kwargs)
    theirs = getattr(torch.nn, kind)(3, 4, **kwargs).double()
    path = save(ours, tmp_path / "c.safetensors")
    theirs.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    x = RNG.standard_normal((2, 3))
    with rnncore.no_grad():
        h = ours(x)
    with torch.no_grad():
        t = theirs(torch.from_numpy(x))
    h, t = (h[0], t[0].numpy()) if isinstance(h, tuple) else (h, t.numpy())
    assert rel_err(h, t) < 1e-12
    rebuilt = load(tmp_path / "c.safetensors")
    assert type(rebuilt) is type(ours) and rebuilt.dtype == np.float64
    if kind == "RNNCell":
        assert rebuilt._layer.nonlinearity == "relu"


def test_linear_and_embedding_round_trip_through_torch(tmp_path):
    lin = rnncore.Linear(5, 3, seed=0)
    emb = rnncore.Embedding(10, 4, padding_idx=0, seed=0)
    t_lin, t_emb = torch.nn.Linear(5, 3), torch.nn.Embedding(10, 4, padding_idx=0)
    for ours, theirs, name in ((lin, t_lin, "l"), (emb, t_emb, "e")):
        path = save(ours, tmp_path / f"{name}.safetensors")
        theirs.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    ids = np.array([[0, 3, 9]])
    with torch.no_grad():
        assert rel_err(lin(x), t_lin(torch.from_numpy(x)).numpy()) < 1e-6
        assert rel_err(emb(ids), t_emb(torch.from_numpy(ids)).numpy()) == 0
    again = load(tmp_path / "e.safetensors")
    assert (again.num_embeddings, again.embedding_dim, again.padding_idx) == (10, 4, 0)
    assert load(tmp_path / "l.safetensors").out_features == 3


# -- task models: a torch.nn.Module with the same submodule names loads the file strictly ----------------
VOCAB = Vocab(list("abcdefgh"))
LABELS = Vocab(["neg", "pos", "mixed"], specials=())


class TorchTask(torch.nn.Module):
    """embedding -> rnn -> head, named as rnncore's task models name them."""

    def __init__(self, model):
        super().__init__()
        rnn = model.rnn
        if getattr(model, "embedding", None) is not None:
            self.embedding = torch.nn.Embedding(model.embedding.num_embeddings, model.embedding.embedding_dim)
        kind = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[type(rnn).__name__]
        extra = {"nonlinearity": rnn.nonlinearity} if kind is torch.nn.RNN else {}
        self.rnn = kind(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers,
                        bidirectional=rnn.bidirectional, **extra)
        self.head = torch.nn.Linear(model.head.in_features, model.head.out_features)


def torch_rnn(module, ids, lengths):
    x = module.embedding(torch.from_numpy(ids))
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
    out, state = module.rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=ids.shape[0])
    return out, state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("which", ["language_model", "classifier", "tagger"])
def test_task_models_load_into_torch_and_back(tmp_path, which):
    if which == "language_model":
        model = LanguageModel(VOCAB, cell="lstm", embedding_dim=4, hidden_size=6, num_layers=2, seed=3)
    elif which == "classifier":
        model = SequenceClassifier(LABELS, VOCAB, cell="gru", embedding_dim=4, hidden_size=5, num_layers=2,
                                   bidirectional=True, seed=3)
    else:
        model = SequenceTagger(VOCAB, Vocab(list("-."), specials=()), embedding_dim=4, hidden_size=5,
                               cell="rnn_relu", num_layers=2, bidirectional=True, seed=3)
    path = save(model, tmp_path / "model.safetensors")
    net = TorchTask(model)
    net.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    ids = RNG.integers(1, len(VOCAB), size=(7, 3))
    lengths = np.array([7, 4, 1])

    def compare(m):
        with rnncore.no_grad(), torch.no_grad():
            out, h_n = torch_rnn(net, ids, lengths)
            if which == "classifier":  # top layer: forward and reverse final states, concatenated
                ours = m.logits(ids, lengths)
                theirs = net.head(torch.cat([h_n[-2], h_n[-1]], dim=1))
            elif which == "tagger":
                ours = m.forward(ids, lengths)
                theirs = net.head(out)
            else:
                ours, _ = m.logits(ids, None, lengths)
                theirs = net.head(out)
        assert rel_err(ours, theirs.numpy()) < 1e-5

    compare(model)
    rebuilt = load(path)  # from the metadata alone
    assert type(rebuilt) is type(model) and rebuilt.get_config() == model.get_config()
    assert rebuilt.vocab == model.vocab
    compare(rebuilt)
    for p in net.parameters():  # torch -> rnncore
        torch.nn.init.uniform_(p, -0.5, 0.5)
    safetensors.torch.save_file(net.state_dict(), str(tmp_path / "torch.safetensors"))
    compare(load(tmp_path / "torch.safetensors", rebuilt))


# -- the format ------------------------------------------------------------------------------------------
def test_metadata_says_dtype_and_rebuilds_the_layer(tmp_path):
    lstm = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    path = save(lstm, tmp_path / "w.safetensors")
    arrays, meta = read_arrays(path)
    assert meta["dtype"] == "float64" and meta["format"] == "pt" and meta["module"] == "LSTM"
    assert json.loads(meta["config"])["bidirectional"] is True
    assert set(arrays) == set(lstm.state_dict()) and all(a.dtype == np.float64 for a in arrays.values())
    again = load(path)
    assert repr(again) == repr(lstm)
    for name, value in lstm.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)


def test_dtype_mismatch_is_refused_unless_cast(tmp_path):
    path = save(rnncore.GRU(2, 3, seed=0), tmp_path / "f32.safetensors")  # float32
    target = rnncore.GRU(2, 3, dtype=np.float64, seed=1)
    before = target.state_dict()
    with pytest.raises(TypeError, match="float32 but the module is float64"):
        load(path, target)
    np.testing.assert_array_equal(target.state_dict()["weight_hh_l0"], before["weight_hh_l0"])  # untouched
    load(path, target, cast=True)
    np.testing.assert_allclose(target.state_dict()["weight_hh_l0"], load(path).state_dict()["weight_hh_l0"])


def test_transposed_and_strided_arrays_survive_save_and_load(tmp_path):
    """safetensors 0.8 silently writes wrong values for non-contiguous arrays (safetensors#825)."""
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    arrays = {"transposed": a.T, "strided": a[:, ::2], "fortran": np.asfortranarray(a)}
    write_atomic(tmp_path / "a.safetensors", encode_arrays(arrays))
    back, _ = read_arrays(tmp_path / "a.safetensors")
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    # a layer loaded from a transposed torch-side array, saved, and loaded again
    lin = rnncore.Linear(4, 6, seed=0)
    lin.load_state_dict({"weight": a.T, "bias": a[0]})
    again = load(save(lin, tmp_path / "lin.safetensors"))
    np.testing.assert_array_equal(again.state_dict()["weight"], a.T)


def test_clear_errors(tmp_path):
    np_save_file({"weight_ih_l0": np.zeros((4, 2), np.float32)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="carries no rnncore metadata"):
        load(tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="missing keys"):
        load(tmp_path / "bare.safetensors", rnncore.RNN(2, 4))
    np_save_file({"weight": np.zeros((2, 2), np.float32), "bias": np.zeros(3, np.float32)},
                 str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"state_dict\['weight'\] must have shape \(3, 2\)"):
        load(tmp_path / "shape.safetensors", rnncore.Linear(2, 3))
    with pytest.raises(FileNotFoundError, match="no such safetensors file"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="must be one of"):
        save(rnncore.Dropout(0.1), tmp_path / "d.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "shape.safetensors").read_bytes()[:-5])
    with pytest.raises(ValueError, match="cut.safetensors is truncated or corrupted"):
        load(tmp_path / "cut.safetensors", rnncore.Linear(2, 3))
    broken = rnncore.Linear(2, 3)
    broken._params["bias"][1] = np.inf
    with pytest.raises(ValueError, match="'bias' contains NaN or Inf"):
        save(broken, tmp_path / "inf.safetensors")
    assert not (tmp_path / "inf.safetensors").exists()


def test_a_checkpoint_weights_file_is_a_standalone_file(tmp_path):
    from rnncore.train.checkpoint import save_checkpoint, weights_path

    model = SequenceClassifier(LABELS, VOCAB, cell="lstm", embedding_dim=3, hidden_size=4, dtype="float64")
    save_checkpoint(tmp_path, model)
    again = load(weights_path(tmp_path))
    assert type(again) is SequenceClassifier and again.get_config() == model.get_config()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)
