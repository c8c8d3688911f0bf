"""Checkpoints: round trip, torch.nn names, atomic saves, and resume giving the same losses."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from rnncore.data import Vocab
from rnncore.data.sources import StreamSource
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.train import checkpoint as ckpt_mod
from rnncore.train.checkpoint import load_checkpoint, load_model, save_checkpoint, weights_path, write_atomic
from rnncore.train.loop import Trainer
from rnncore.train.optim import Adam

VOCAB = Vocab(list("abcdefgh"))


def lm(**kw):
    args = dict(cell="lstm", embedding_dim=4, hidden_size=6, num_layers=2, dropout=0.2, seed=3)
    args.update(kw)
    return LanguageModel(VOCAB, **args)


def test_model_round_trip(tmp_path):
    model = SequenceClassifier(Vocab(["neg", "pos"], specials=()), VOCAB, cell="gru", embedding_dim=3,
                               hidden_size=5, bidirectional=True, merge="product", dtype="float64", seed=1)
    for _, value in model.named_parameters():
        value += 0.5  # not the seed's weights
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert type(again) is SequenceClassifier
    assert again.get_config() == model.get_config() and again.dtype == np.float64
    assert again.vocab == model.vocab and again.labels == model.labels
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_weights_file_has_torch_names_and_dtype(tmp_path):
    model = lm()
    save_checkpoint(tmp_path, model)
    weights = load_file(weights_path(tmp_path))
    assert set(weights) == set(model.state_dict())
    assert {"embedding.weight", "rnn.weight_ih_l1", "rnn.bias_hh_l0", "head.weight"} <= set(weights)
    assert all(w.dtype == np.float32 for w in weights.values())
    spec = json.loads((tmp_path / "checkpoint.json").read_text())
    assert spec["dtype"] == "float32" and spec["model"]["config"]["kind"] == "language_model"
    assert spec["model"]["vocabs"]["vocab"]["tokens"] == list("abcdefgh")


def test_loads_into_torch_modules(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    model = lm(dropout=0.0)
    save_checkpoint(tmp_path, model)
    state = safetensors.torch.load_file(str(weights_path(tmp_path)))
    rnn = torch.nn.LSTM(4, 6, num_layers=2)
    rnn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("rnn.")}, strict=True)
    head = torch.nn.Linear(6, len(VOCAB))
    head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")}, strict=True)
    ids = np.random.default_rng(0).integers(0, len(VOCAB), size=(5, 2))
    ours, _ = model.logits(ids)
    with torch.no_grad():
        x = torch.from_numpy(model.embedding.state_dict()["weight"][ids])
        theirs = head(rnn(x)[0]).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_transposed_arrays_survive(tmp_path):
    """safetensors 0.8 silently corrupts non-contiguous arrays (safetensors#825)."""
    model = lm()
    w = dict(model.named_parameters())["head.weight"]
    p = Adam(model, lr=0.1)
    fortran = np.asfortranarray(np.arange(w.size, dtype=np.float32).reshape(w.shape))
    p.buffers["exp_avg"]["head.weight"] = fortran
    save_checkpoint(tmp_path, model, p, {"step": 0}, arrays={"t": np.arange(12.0).reshape(3, 4).T})
    c = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(c.arrays["t"], np.arange(12.0).reshape(3, 4).T)
    np.testing.assert_array_equal(c.optimizer_state["buffers"]["exp_avg/head.weight"],
                                  np.arange(w.size, dtype=np.float32).reshape(w.shape))


def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = lm()
    opt = Adam(model)
    opt.step()
    save_checkpoint(tmp_path, model, opt, {"step": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for _, value in model.named_parameters():
        value += 1.0

    calls = []
    real = ckpt_mod.write_atomic

    def failing(path, data):
        calls.append(path.name)
        if path.name == "checkpoint.json":  # fail at the very last write: the pointer
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(ckpt_mod, "write_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, opt, {"step": 2})
    assert calls[0].startswith("model-") and calls[1].startswith("train-") and calls[2] == "checkpoint.json"
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # the new weights were removed, the old files untouched
    assert load_checkpoint(tmp_path).train_state == {"step": 1}


def test_write_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    write_atomic(target, "old")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr("os.fsync", boom)  # the one os module, used by rnncore.io.files.write_atomic
    with pytest.raises(OSError, match="fsync failed"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


def test_old_files_are_removed_after_a_new_save(tmp_path):
    model = lm()
    opt = Adam(model)
    opt.step()
    for _ in range(3):
        save_checkpoint(tmp_path, model, opt, {"step": 0})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[0] == "checkpoint.json"


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path)


def _run(tmp_path, name, steps, resume_from=None):
    rng = np.random.default_rng(0)
    ids = rng.integers(4, len(VOCAB), size=400)
    train = StreamSource(ids, 4, 7, seed=5)  # 14 batches per epoch, random offsets per epoch
    losses = []
    if resume_from is None:
        model = lm()
        trainer = Trainer(model, Adam(model, lr=0.01), clip_norm=1.0, out_dir=tmp_path / name, log_every=1)
    else:
        trainer = Trainer.resume(resume_from, log_every=1)
    trainer.fit(train, epochs=3, max_steps=steps, on_step=lambda tr, loss, norm: losses.append(loss))
    return trainer, losses


def test_resume_gives_the_same_losses(tmp_path):
    """Stopped mid-epoch (carried state, dropout generators, Adam moments, data order) and resumed."""
    _, full = _run(tmp_path, "full", 30)
    _, first = _run(tmp_path, "split", 19)
    assert first == full[:19]
    trainer, rest = _run(tmp_path, "unused", 30, resume_from=tmp_path / "split")
    assert trainer.step == 30
    assert rest == full[19:]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    logged = [r["loss"] for r in map(json.loads, lines) if "loss" in r]
    assert logged == full
