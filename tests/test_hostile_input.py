"""Hostile input across the public API: each case gets a clear error (the argument, the expected, the
received) and loses nothing (the module, the optimizer, the checkpoint on disk are left as they were).
tests/nn/test_bad_input.py holds the recurrent layers' shape, dtype and length cases."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rnncore
from cli import main
from rnncore.data import Vocab
from rnncore.data.batching import Batch, pad_sequences
from rnncore.data.sources import SequenceSource, StreamSource, collate_classification
from rnncore.data.tokenize import read_text
from rnncore.models.base import TaskModel
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.nn._checks import NonFiniteError
from rnncore.train.checkpoint import (
    POINTER,
    load_checkpoint,
    load_model,
    save_checkpoint,
    weights_path,
    write_atomic,
)
from rnncore.train.clip import clip_grad_norm, clip_grad_value
from rnncore.train.loop import Trainer, read_metrics
from rnncore.train.optim import SGD, Adam

VOCAB = Vocab(list("abcdefgh"))
LABELS = Vocab(["neg", "pos"], specials=())
f32 = np.float32


def x_of(shape, dtype=f32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def snapshot(module):
    return {k: v.copy() for k, v in module.state_dict().items()}


def assert_unchanged(module, before):
    after = module.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def lm(**kw):
    args = dict(cell="lstm", embedding_dim=4, hidden_size=6, num_layers=1, seed=3)
    args.update(kw)
    return LanguageModel(VOCAB, **args)


# -- layers and cells: empty batches, cells, non-finite weights ----------------------------------------
@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_an_empty_batch_gives_empty_outputs_and_gradients(cls):
    """B = 0 is a valid batch (nothing to compute), as in torch.nn; T = 0 is an error (test_bad_input)."""
    m = cls(3, 4, num_layers=2, bidirectional=True, seed=0)
    out, state = m(np.zeros((5, 0, 3), f32), lengths=np.zeros(0, np.int64))
    assert out.shape == (5, 0, 8)
    for s in state if isinstance(state, tuple) else (state,):
        assert s.shape == (4, 0, 4)
    dx, _ = m.backward(np.zeros_like(out))
    assert dx.shape == (5, 0, 3)
    assert all(not g.any() for g in m.grads.values())


@pytest.mark.parametrize("cls", [rnncore.RNNCell, rnncore.LSTMCell, rnncore.GRUCell])
def test_cells_check_shapes_and_dtypes(cls):
    cell = cls(3, 4, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, I=3\) or \(I,\), got \(2, 5\)"):
        cell(x_of((2, 5)))
    with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
        cell(x_of((2, 3), np.float64))
    h = x_of((3, 4))  # a batch of 3 states for a batch of 2 inputs
    state = (h, None) if cls is rnncore.LSTMCell else h
    with pytest.raises(ValueError, match=r"h must have shape \(2, 4\), got \(3, 4\)"):
        cell(x_of((2, 3)), state)
    new = cell(np.zeros((0, 3), f32))  # an empty batch
    assert all(s.shape == (0, 4) for s in (new if isinstance(new, tuple) else (new,)))


@pytest.mark.parametrize("kind", ["input", "weight"])
@pytest.mark.parametrize("cls", [rnncore.RNNCell, rnncore.LSTMCell, rnncore.GRUCell])
def test_cells_reject_non_finite_when_checking(cls, kind):
    cell = cls(3, 4, seed=0, check_finite=True)
    x = x_of((2, 3))
    if kind == "input":
        x[1, 2] = np.inf
        match = r"x contains NaN or Inf \(first at index \(1, 2\)\)"
    else:
        cell._params["weight_hh"][0, 1] = np.nan
        match = r"parameter 'weight_hh' contains NaN or Inf \(first at index \(0, 1\)\)"
    with pytest.raises(NonFiniteError, match=match):
        cell(x)
    with rnncore.no_grad(), pytest.raises(NonFiniteError, match=match):  # the generation step kernel
        cell(x)


@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_non_finite_weights_are_named_at_forward_and_step(cls):
    m = cls(3, 4, num_layers=2, seed=0, check_finite=True)
    m._params["bias_hh_l1"][3] = -np.inf
    with pytest.raises(NonFiniteError, match=r"parameter 'bias_hh_l1' contains NaN or Inf \(first at index "
                                             r"\(3,\)\)"):
        m(x_of((4, 2, 3)))
    with pytest.raises(NonFiniteError, match=r"parameter 'bias_hh_l1'"):
        m.step(x_of((2, 3)))
    unchecked = cls(3, 4, num_layers=2, seed=0)
    unchecked._params["bias_hh_l1"][3] = np.nan
    out, _ = unchecked(x_of((4, 2, 3)))
    assert np.isnan(out).any()  # without checking, NaN stays visible


def test_step_rejects_a_state_that_overflows_when_checking():
    m = rnncore.RNN(3, 4, nonlinearity="identity", seed=0, check_finite=True)
    m._params["weight_hh_l0"][...] = 1e38
    with pytest.raises(NonFiniteError, match=r"new h contains NaN or Inf"):
        m.step(x_of((2, 3)), np.ones((1, 2, 4), f32))


def test_linear_and_embedding_check_finite():
    lin = rnncore.Linear(4, 2, check_finite=True)
    x = x_of((3, 4))
    x[2, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"x contains NaN or Inf \(first at index \(2, 0\)\)"):
        lin(x)
    lin._params["bias"][1] = np.inf
    with pytest.raises(NonFiniteError, match=r"parameter 'bias' contains NaN or Inf \(first at index \(1,\)"):
        lin(np.zeros((3, 4), f32))
    emb = rnncore.Embedding(10, 3, check_finite=True)
    emb._params["weight"][7, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"'weight' contains NaN or Inf \(first at index \(7, 2\)\)"):
        emb(np.array([1, 2]))


@pytest.mark.parametrize(("ids", "match"),
                         [([[1, -1]], r"ids must lie in \[0, 10\), got -1 at index \(0, 1\)"),
                          ([3, 10, 11], r"ids must lie in \[0, 10\), got 10 at index \(1,\)")])
def test_embedding_ids_out_of_range_name_the_index(ids, match):
    with pytest.raises(ValueError, match=match):
        rnncore.Embedding(10, 3)(np.array(ids))


# -- load_state_dict ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("other", "missing_or_shapes"), [
    (lambda: rnncore.LSTM(3, 8), [r"'weight_ih_l0'\] must have shape \(16, 3\), got \(32, 3\)",
                                  r"'weight_hh_l0'\] must have shape \(16, 4\), got \(32, 8\)",
                                  r"'bias_ih_l0'\] must have shape \(16,\), got \(32,\)",
                                  r"'bias_hh_l0'\] must have shape \(16,\), got \(32,\)"]),
    (lambda: rnncore.GRU(3, 4), [r"'weight_ih_l0'\] must have shape \(16, 3\), got \(12, 3\)",
                                 r"'weight_hh_l0'\] must have shape \(16, 4\), got \(12, 4\)"]),
    (lambda: rnncore.LSTM(3, 4, num_layers=2), [r"unexpected keys \['weight_ih_l1', 'weight_hh_l1', "
                                                r"'bias_ih_l1', 'bias_hh_l1'\]"]),
])
def test_weights_of_another_architecture_list_every_mismatch_and_change_nothing(other, missing_or_shapes):
    model = rnncore.LSTM(3, 4, seed=0)
    before = snapshot(model)
    with pytest.raises(ValueError, match="state_dict does not match LSTM") as err:
        model.load_state_dict(other().state_dict())
    for pattern in missing_or_shapes:
        assert re.search(pattern, str(err.value)), (pattern, str(err.value))
    assert "expected keys and shapes: weight_ih_l0 (16, 3)" in str(err.value)
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_state_dict_rejects_non_finite_values_and_changes_nothing(bad):
    model = rnncore.GRU(3, 4, seed=0)
    before = snapshot(model)
    incoming = snapshot(model)
    incoming["weight_ih_l0"] += 1.0  # would be written first, if anything were
    incoming["bias_hh_l0"][7] = bad
    with pytest.raises(NonFiniteError, match=r"state_dict\['bias_hh_l0'\] \(as float32\) contains NaN or Inf "
                                             r"\(first at index \(7,\)\)"):
        model.load_state_dict(incoming)
    assert_unchanged(model, before)


def test_float64_weights_beyond_float32_range_are_rejected():
    model = rnncore.RNN(2, 2, seed=0)
    incoming = {k: v.astype(np.float64) for k, v in snapshot(model).items()}
    incoming["weight_hh_l0"][1, 1] = 1e300  # finite in float64, Inf in float32
    with pytest.raises(NonFiniteError, match=r"'weight_hh_l0'\] \(as float32\) contains NaN or Inf"):
        model.load_state_dict(incoming)


def test_load_state_dict_type_errors():
    model = rnncore.RNN(2, 2, seed=0)
    before = snapshot(model)
    with pytest.raises(TypeError, match="state_dict must be a mapping of names to arrays, got list"):
        model.load_state_dict([1, 2])
    with pytest.raises(TypeError, match=r"state_dict\['weight_ih_l0'\] must hold floating-point values, "
                                        r"got <U1"):
        model.load_state_dict({k: "x" for k in before})
    assert_unchanged(model, before)


# -- task models -------------------------------------------------------------------------------------
def test_language_model_ids_outside_the_vocabulary():
    ids = np.random.default_rng(0).integers(0, len(VOCAB), (5, 2))
    bad = ids.copy()
    bad[3, 1] = len(VOCAB) + 4
    for model in (lm(), lm(embedding_dim=None)):  # embedding and one-hot input
        with pytest.raises(ValueError, match=rf"(ids|inputs) must lie in \[0, {len(VOCAB)}\), got 16 at "
                                             r"index \(3, 1\)"):
            model.loss_and_backward(Batch(inputs=bad, targets=ids))
        with pytest.raises(ValueError, match=r"targets must lie in \[0, C\) = \[0, 12\)"):
            model.loss_and_backward(Batch(inputs=ids, targets=bad))
    with pytest.raises(TypeError, match="inputs must be an integer array, got dtype float64"):
        lm(embedding_dim=None).loss_and_backward(Batch(inputs=ids + 0.5, targets=ids))


def test_task_models_on_empty_batches_and_bad_lengths():
    model = lm()
    none = np.zeros((5, 0), np.int64)
    empty = model.loss_and_backward(Batch(inputs=none, targets=none))
    assert empty.loss == 0.0 and empty.count == 0
    assert all(not g.any() for g in model.grads.values())
    ids = np.ones((5, 2), np.int64)
    with pytest.raises(ValueError, match=r"lengths must lie in 1..T = 1..5, got min 0 and max 5"):
        model.loss_and_backward(Batch(inputs=ids, targets=ids, lengths=[0, 5]))
    with pytest.raises(ValueError, match=r"lengths must lie in 1..T = 1..5, got min 5 and max 6"):
        model.loss_and_backward(Batch(inputs=ids, targets=ids, lengths=[6, 5]))
    clf = SequenceClassifier(LABELS, VOCAB, embedding_dim=3, hidden_size=4, seed=0)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, C\) = \[0, 2\) .*got 5 at index \(1,\)"):
        clf.loss_and_backward(Batch(inputs=ids, labels=np.array([0, 5])))
    features = SequenceClassifier(LABELS, None, input_size=3, hidden_size=4, seed=0)
    with pytest.raises(TypeError, match=r"inputs must be real-valued features \(T, B, F\), got dtype <U1"):
        features.loss_and_backward(Batch(inputs=np.full((5, 2, 3), "a"), labels=np.array([0, 1])))


# -- optimizers and clipping -------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda m: Adam(m, lr="fast"), TypeError, "lr must be a finite number >= 0, got 'fast'"),
    (lambda m: Adam(m, lr=np.ones(2)), TypeError, "lr must be a finite number >= 0, got array"),
    (lambda m: Adam(m, betas=(0.9,)), ValueError, r"betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
    (lambda m: SGD(m, momentum=True), TypeError, r"momentum must be a number in \[0, 1\), got True"),
    (lambda m: SGD(m, lr=float("nan")), ValueError, "lr must be a finite number >= 0, got nan"),
    (lambda m: SGD([("w", np.arange(3), np.zeros(3, np.int64))]), TypeError,
     "w: param must be a floating-point array \\(updated in place\\), got int64"),
])
def test_optimizer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(rnncore.RNN(2, 2))


@pytest.mark.parametrize(("edit", "error", "match"), [
    (lambda s: s["hyper"].update(params=1), ValueError, r"unknown hyper-parameters \['params'\]"),
    (lambda s: s["hyper"].update(lr="x"), TypeError, "hyper-parameter lr must be a finite number"),
    (lambda s: s["buffers"]["exp_avg/weight_hh_l0"].__setitem__((0, 0), np.nan), NonFiniteError,
     r"optimizer buffer 'exp_avg/weight_hh_l0' contains NaN or Inf"),
    (lambda s: s["buffers"].update({"exp_avg/weight_hh_l0": np.zeros((3, 3))}), ValueError,
     r"optimizer buffer 'exp_avg/weight_hh_l0' has shape \(3, 3\), expected \(2, 2\)"),
    (lambda s: s.update(name="SGD"), ValueError, "optimizer state is for SGD, not Adam"),
])
def test_optimizer_load_state_dict_checks_before_changing_anything(edit, error, match):
    model = rnncore.RNN(2, 2, seed=0)
    opt = Adam(model, lr=0.1)
    for g in model.grads.values():
        g += 1.0
    opt.step()
    state = opt.state_dict()
    before = opt.state_dict()
    edit(state)
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert after["hyper"] == before["hyper"] and after["step"] == before["step"]
    for k, v in before["buffers"].items():
        np.testing.assert_array_equal(after["buffers"][k], v)
    assert isinstance(opt.params, list)


def test_clipping_arguments():
    grads = [np.ones(3, f32)]
    with pytest.raises(TypeError, match="max_norm must be a number > 0, got 'a'"):
        clip_grad_norm(grads, "a")
    with pytest.raises(ValueError, match="max_norm must be > 0, got nan"):
        clip_grad_norm(grads, float("nan"))
    with pytest.raises(ValueError, match=r"clip_value must be > 0, got -1.0"):
        clip_grad_value(grads, -1)
    with pytest.raises(TypeError, match="grads must be a Module, an optimizer, a dict of arrays or an"):
        clip_grad_norm(None, 1.0)
    with pytest.raises(TypeError, match=r"grads\[1\] must be a floating-point numpy array \(clipped in "
                                        r"place\), got a int64 array"):
        clip_grad_norm([np.ones(2), np.arange(3)], 1.0)
    np.testing.assert_array_equal(grads[0], np.ones(3, f32))  # nothing scaled by the failed calls


# -- data --------------------------------------------------------------------------------------------
def test_vocab_and_sources():
    v = Vocab(list("ab"))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 6\) \(the vocabulary size\), got 99"):
        v.decode([1, 99])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 6\)"):
        v.decode([-1])
    with pytest.raises(TypeError, match="ids must be integers, got dtype float64"):
        v.decode([1.5])
    with pytest.raises(ValueError, match=r"vocabulary tokens must be unique, got duplicates \['a'\]"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ValueError, match=r"a vocabulary must be a dict with a 'tokens' list .*got \['x'\]"):
        Vocab.from_dict({"x": 1})
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        Vocab.from_dict({"tokens": ["a"], "extra": 1})
    with pytest.raises(ValueError, match="a vocabulary's tokens must be a list of strings"):
        Vocab.from_dict({"tokens": ["a", 3]})
    with pytest.raises(ValueError, match=r"every sequence must have elements of shape \(3,\) \(as sequence "
                                         r"0\), got \(4,\) in sequence 1"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))], 0.0, dtype=f32)
    ids = np.arange(100) % 6
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        StreamSource(ids, 0, 8)
    with pytest.raises(ValueError, match="bptt must be an integer >= 1, got 0"):
        StreamSource(ids, 2, 0)
    with pytest.raises(TypeError, match=r"ids must be a 1-D stream of integer token ids, got float64 shape "
                                        r"\(100,\)"):
        StreamSource(ids + 0.5, 2, 4)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        SequenceSource([np.array([1])], [1], 0, lambda b: collate_classification(b, 0))


def test_text_that_is_not_utf8_names_the_file_offset_and_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))} is not UTF-8 text: byte 0xe9 at offset 14 "
                                         r"\(line 2\) cannot be decoded \(invalid continuation byte\)"):
        read_text(bad)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfhello")
    assert read_text(bom) == "hello"  # the byte-order mark is not text


def test_cli_reports_non_utf8_data_files_and_input(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"pos\tgood\nneg\tbad \xff\n")
    result = CliRunner().invoke(main, ["train", "classify", "--data", str(bad), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1
    assert "is not UTF-8 text: byte 0xff at offset 17 (line 2)" in result.output
    text = tmp_path / "bad.txt"
    text.write_bytes(b"abc" * 50 + b"\x80")
    result = CliRunner().invoke(main, ["train", "lm", "--text", str(text), "--out", str(tmp_path / "l")])
    assert result.exit_code == 1 and "--text:" in result.output and "byte 0x80 at offset 150" in result.output
    assert not (tmp_path / "l" / "checkpoint").exists()
    model_dir = tmp_path / "m"
    lm().save(model_dir / "checkpoint")
    result = CliRunner().invoke(main, ["predict", str(model_dir)], input=b"ab\n\xc3(\n")
    assert result.exit_code == 1 and "--input:" in result.output
    assert "byte 0xc3 at offset 3 (line 2)" in result.output


@pytest.mark.parametrize(("args", "option"), [
    (["--batch-size", "0"], "--batch-size"), (["--dropout", "1"], "--dropout"), (["--cell", "tcn"], "--cell"),
    (["--lr", "nan"], "--lr"), (["--epochs", "-1"], "--epochs"), (["--dtype", "float16"], "--dtype"),
    (["--bptt", "0"], "--bptt"), (["--checkpoint-every", "0"], "--checkpoint-every"),
])
def test_cli_options_out_of_range_name_the_option(args, option):
    result = CliRunner().invoke(main, ["train", "lm", *args, "--dry-run"])
    assert result.exit_code == 2 and f"'{option}'" in result.output


# -- checkpoints -------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = lm()
    opt = Adam(model, lr=0.1)
    opt.step()
    path = tmp_path / "ckpt"
    save_checkpoint(path, model, opt, {"step": 1}, arrays={"carry/0": np.ones((1, 2, 6), f32)})
    return path, json.loads((path / POINTER).read_text())


@pytest.mark.parametrize("which", ["weights", "train"])
@pytest.mark.parametrize("cut", ["half", "header", "tail"])
def test_truncated_safetensors_files(saved, which, cut):
    path, spec = saved
    file = path / spec[which]
    data = file.read_bytes()
    file.write_bytes({"half": data[: len(data) // 2], "header": data[:4], "tail": data[:-1]}[cut])
    with pytest.raises(ValueError, match=rf"{re.escape(str(file))} is truncated or corrupted: not a readable "
                                         r"safetensors file \(SafetensorError"):
        load_checkpoint(path)


def test_garbled_safetensors_header(saved):
    path, spec = saved
    file = path / spec["weights"]
    data = bytearray(file.read_bytes())
    data[8:40] = b"\xff" * 32
    file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is truncated or corrupted"):
        load_model(path)


@pytest.mark.parametrize(("text", "match"), [
    ('{"format": "rnncore-checkpoint", "we', r"checkpoint.json is corrupted: not valid JSON \(Unterminated"),
    (b"\xff\xfe\x00", r"checkpoint.json is corrupted: not valid JSON \('utf-8' codec"),
    ("[1, 2]", r"checkpoint.json is not an rnncore checkpoint"),
    ("", r"checkpoint.json is corrupted: not valid JSON \(Expecting value"),
])
def test_garbled_checkpoint_json(saved, text, match):
    path, _ = saved
    pointer = path / POINTER
    pointer.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize(("edit", "error", "match"), [
    (lambda s: s.pop("model"), ValueError, r"corrupted: it needs a \"model\" entry with a \"config\" dict"),
    (lambda s: s.update(weights="../../etc/passwd"), ValueError,
     r"'weights' must name a .safetensors file in the checkpoint directory, got '../../etc/passwd'"),
    (lambda s: s.update(train=".train-x.safetensors.tmp"), ValueError, r"'train' must name a .safetensors"),
    (lambda s: s.update(format_version=99), ValueError, "has format version 99; this rnncore reads up to 1"),
    (lambda s: s["model"]["config"].update(hiden_size=7), ValueError,
     r"its model config does not build a model: config for LanguageModel \('language_model'\) has unknown "
     r"keys \['hiden_size'\]; known keys: \['bos_eos', 'cell', "),
    (lambda s: s["model"]["config"].update(kind="rnn-x"), ValueError, "unknown model kind 'rnn-x'"),
    (lambda s: s["model"].update(vocabs={}), ValueError, r"LanguageModel needs the vocabularies \['vocab'\]"),
    (lambda s: s["model"]["config"].update(hidden_size=9), ValueError,
     r"model-\w+.safetensors does not hold the weights of the model checkpoint.json describes: state_dict "
     r"does not match LanguageModel: .*state_dict\['head.weight'\] must have shape \(12, 9\), got "
     r"\(12, 6\); "),
])
def test_checkpoint_json_that_does_not_fit(saved, edit, error, match):
    path, spec = saved
    edit(spec)
    (path / POINTER).write_text(json.dumps(spec))
    with pytest.raises(error, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize("which", ["weights", "train"])
def test_a_file_the_pointer_names_is_missing(saved, which):
    path, spec = saved
    (path / spec[which]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"checkpoint.json names {spec[which]}, which does not exist "
                                                r"\(the checkpoint directory is incomplete\)"):
        load_checkpoint(path)


def test_non_finite_weights_are_never_saved(saved):
    path, _ = saved
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    model = lm()
    dict(model.named_parameters())["rnn.weight_hh_l0"][2, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"LanguageModel parameter 'rnn.weight_hh_l0' contains "
                                             r"NaN or Inf \(first at index \(2, 3\)\)"):
        save_checkpoint(path, model)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_checkpoint(path).train_state == {"step": 1}


def test_temporary_files_of_a_killed_save_are_removed_by_the_next(saved):
    path, spec = saved
    for name in (f".{spec['weights']}.a1b2.tmp", ".train-0123.safetensors.x.tmp", f".{POINTER}.zz.tmp",
                 "model-deadbeef0000.safetensors"):
        (path / name).write_bytes(b"partial")
    (path / "notes.txt").write_text("not ours")
    (path.parent / ".config.json.k3j.tmp").write_bytes(b"partial")  # write_atomic's own temporary files
    (path.parent / ".config.json.extra").write_bytes(b"not one of them")
    model = lm()
    save_checkpoint(path, model)
    spec = json.loads((path / POINTER).read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted([POINTER, spec["weights"], "notes.txt"])
    write_atomic(path.parent / "config.json", "{}")
    assert sorted(p.name for p in path.parent.iterdir()) == [".config.json.extra", "ckpt", "config.json"]


def test_config_with_unknown_keys_and_the_cli_resume_of_a_garbled_run(tmp_path):
    config = lm().get_config()
    config.update(hidden_sise=5, colour="red")
    with pytest.raises(ValueError, match=r"has unknown keys \['colour', 'hidden_sise'\]; known keys: "):
        TaskModel.from_config(config, {"vocab": VOCAB})
    config = lm().get_config()
    config.pop("cell")  # every key has a default: still builds
    assert TaskModel.from_config(config, {"vocab": VOCAB}).config["cell"] == "lstm"

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "lm", "epochs": ')
    result = CliRunner().invoke(main, ["train", "lm", "--resume", str(run)])
    assert result.exit_code == 1 and "config.json is corrupted: not valid JSON" in result.output
    (run / "config.json").write_text(json.dumps({"task": "lm", "epochs": 1, "learning_rate": 3}))
    result = CliRunner().invoke(main, ["train", "lm", "--resume", str(run)])
    assert result.exit_code == 1 and "has unknown keys ['learning_rate']" in result.output


# -- training that turns non-finite --------------------------------------------------------------------
def _stream(seed=0):
    ids = np.random.default_rng(seed).integers(4, len(VOCAB), size=300)
    return StreamSource(ids, 4, 6, seed=1)


def _fit_until_failure(tmp_path, model, opt, source, **fit):
    snapshots = {}

    def keep(trainer, loss, norm):
        snapshots[trainer.step] = snapshot(trainer.model)

    trainer = Trainer(model, opt, out_dir=tmp_path / "run", checkpoint_every=1, log_every=1)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(source, epochs=3, on_step=keep, **fit)
    return trainer, snapshots, str(err.value)


def _assert_last_good_checkpoint(tmp_path, snapshots, step):
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert ckpt.train_state["step"] == step
    theirs = ckpt.model.state_dict()
    for k, v in snapshots[step].items():
        np.testing.assert_array_equal(theirs[k], v, err_msg=k)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert max(r["step"] for r in records) == step
    resumed = Trainer.resume(tmp_path / "run")  # and training can go on from it
    assert resumed.step == step


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = lm()
    real = type(model).loss_and_backward
    calls = []

    def flaky(self, batch, state=None):
        result = real(self, batch, state)
        calls.append(1)
        if len(calls) == 5:
            result.loss = float("nan")
        return result

    monkeypatch.setattr(type(model), "loss_and_backward", flaky)
    trainer, snapshots, message = _fit_until_failure(tmp_path, model, Adam(model, lr=0.01), _stream())
    assert message.startswith("step 5 (epoch 1, batch 5): the loss is nan; training stopped, the last good "
                              f"checkpoint, step 4, is kept in {tmp_path / 'run' / 'checkpoint'}")
    assert trainer.step == 4
    monkeypatch.undo()
    _assert_last_good_checkpoint(tmp_path, snapshots, 4)


def test_a_nan_gradient_names_the_parameter(tmp_path, monkeypatch):
    model = lm()
    real = type(model).loss_and_backward

    def poisoned(self, batch, state=None):
        result = real(self, batch, state)
        if len(snapshots_seen) == 3:
            self.grads["rnn.weight_hh_l0"][4, 1] = np.inf
        snapshots_seen.append(1)
        return result

    snapshots_seen = []
    monkeypatch.setattr(type(model), "loss_and_backward", poisoned)
    _, snapshots, message = _fit_until_failure(tmp_path, model, Adam(model, lr=0.01), _stream())
    assert message.startswith("step 4 (epoch 1, batch 4): the gradient norm is inf: the gradient of "
                              "'rnn.weight_hh_l0' contains NaN or Inf (first at index (4, 1)); training "
                              "stopped, the last good checkpoint, step 3, is kept")
    monkeypatch.undo()
    _assert_last_good_checkpoint(tmp_path, snapshots, 3)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_an_update_that_overflows_names_the_parameter(tmp_path):
    model = lm(dtype="float32")
    _, snapshots, message = _fit_until_failure(tmp_path, model, SGD(model, lr=1e300), _stream())
    assert re.match(r"step 1 \(epoch 1, batch 1\): the update made the parameters non-finite: the parameter "
                    r"of '[\w.]+' contains NaN or Inf", message)
    assert "no checkpoint had been written yet" in message
    assert not (tmp_path / "run" / "checkpoint" / POINTER).exists()


def test_a_corrupted_data_value_names_the_step_and_the_tensor(tmp_path):
    rng = np.random.default_rng(0)
    examples = [(rng.standard_normal((int(rng.integers(2, 6)), 3)).astype(f32), int(rng.integers(0, 2)))
                for _ in range(40)]
    examples[17][0][1, 2] = np.nan  # one bad value in one example

    def collate(batch):
        from rnncore.data.batching import pad_sequences

        x, lengths = pad_sequences([e[0] for e in batch], 0.0, dtype=f32)
        return Batch(inputs=x, lengths=lengths, labels=np.array([e[1] for e in batch]))

    source = SequenceSource(examples, [len(e[0]) for e in examples], 4, collate, shuffle=False)
    bad_batch = next(i for i, b in enumerate(source.batches(0)) if np.isnan(b.inputs).any())
    model = SequenceClassifier(LABELS, None, input_size=3, hidden_size=4, seed=0)
    _, snapshots, message = _fit_until_failure(tmp_path, model, Adam(model, lr=0.01), source)
    position = tuple(int(i) for i in np.argwhere(np.isnan(list(source.batches(0))[bad_batch].inputs))[0])
    assert position[0] == 1 and position[2] == 2
    assert message.startswith(f"step {bad_batch + 1} (epoch 1, batch {bad_batch + 1}): inputs contains NaN "
                              f"or Inf (first at index {position}); training stopped, the last good "
                              f"checkpoint, step {bad_batch}, is kept")
    _assert_last_good_checkpoint(tmp_path, snapshots, bad_batch)


def test_real_valued_inputs_are_checked_inside_the_lengths_only():
    from rnncore.models.conditioned import ConditionedDecoder
    from rnncore.models.tagger import SequenceRegressor

    x, y = x_of((6, 2, 1), np.float64), x_of((6, 2, 1), np.float64, seed=1)
    reg = SequenceRegressor(1, 1, hidden_size=3, dtype="float64", seed=0)
    x[4, 1, 0] = np.inf  # padding of sequence 1 (length 3): never read
    assert np.isfinite(reg.loss_and_backward(Batch(inputs=x, targets=y, lengths=np.array([6, 3]))).loss)
    with pytest.raises(NonFiniteError, match=r"inputs contains NaN or Inf \(first at index \(4, 1, 0\)\)"):
        reg.loss_and_backward(Batch(inputs=x, targets=y, lengths=np.array([6, 5])))
    cap = ConditionedDecoder(VOCAB, 3, embedding_dim=2, hidden_size=3, seed=0)
    features = x_of((2, 3))
    features[1, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"features contains NaN or Inf \(first at index \(1, 0\)\)"):
        cap.loss_and_backward(Batch(features=features, targets=np.ones((2, 2), np.int64),
                                    target_lengths=np.array([2, 1])))
    with pytest.raises(TypeError, match="model must be a task model"):
        save_checkpoint("unused", rnncore.LSTM(2, 2))


def test_cli_commands_on_a_corrupted_run(saved):
    path, spec = saved
    (path / spec["weights"]).write_bytes(b"\x00" * 7)
    for command in (["generate", str(path)], ["evaluate", str(path)], ["predict", str(path)]):
        result = CliRunner().invoke(main, command, input="ab\n")
        assert result.exit_code == 1, command
        assert f"{spec['weights']} is truncated or corrupted" in result.output, command


def test_resume_drops_a_metrics_line_torn_by_a_kill(tmp_path):
    model = lm()
    trainer = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / "run", checkpoint_every=2, log_every=1)
    trainer.fit(_stream(), epochs=1, max_steps=5)  # checkpoints at steps 2, 4 and 5 (the end)
    log = tmp_path / "run" / "metrics.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"step": 6, "epoch": 0, "lo')  # a kill in the middle of a write
    resumed = Trainer.resume(tmp_path / "run", log_every=1)
    assert resumed.step == 5
    records = read_metrics(log)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    resumed.fit(_stream(), epochs=1, max_steps=7)
    assert [r["step"] for r in read_metrics(log) if "loss" in r] == [1, 2, 3, 4, 5, 6, 7]


def _comparable(records):
    keys = ("step", "epoch", "loss", "grad_norm", "lr", "train_loss")  # not the times
    return [{k: r[k] for k in keys if k in r} for r in records]


def test_resume_after_a_stop_between_the_epoch_record_and_its_save(tmp_path, monkeypatch):
    """The log holds the epoch record, the checkpoint (of the same step) not yet: resuming must neither
    lose nor repeat it, and the epoch's train_loss must cover all its batches."""
    model = lm()
    reference = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / "ref", checkpoint_every=4, log_every=3)
    reference.fit(_stream(), epochs=2)

    real = Trainer.save

    def dies_at_the_end_of_epoch_1(self, path=None):
        if self.epoch == 1 and self.batch_in_epoch == 0:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(Trainer, "save", dies_at_the_end_of_epoch_1)
    model = lm()
    trainer = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / "run", checkpoint_every=4, log_every=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_stream(), epochs=2)
    monkeypatch.undo()
    resumed = Trainer.resume(tmp_path / "run", checkpoint_every=4, log_every=3)
    assert resumed.epoch == 0 and resumed.batch_in_epoch < len(_stream())
    resumed.fit(_stream(), epochs=2)
    assert _comparable(read_metrics(tmp_path / "run" / "metrics.jsonl")) == \
        _comparable(read_metrics(tmp_path / "ref" / "metrics.jsonl"))
    for name, value in reference.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def test_resume_of_a_checkpoint_with_a_garbled_training_state(tmp_path):
    model = lm()
    trainer = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / "run")
    trainer.fit(_stream(), epochs=1, max_steps=2)
    pointer = tmp_path / "run" / "checkpoint" / POINTER
    spec = json.loads(pointer.read_text())
    del spec["train_state"]["batch_in_epoch"]
    pointer.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"the training state in the checkpoint is unusable "
                                         r"\(KeyError: 'batch_in_epoch'\)"):
        Trainer.resume(tmp_path / "run")


def test_cli_training_that_turns_non_finite_exits_with_the_message(tmp_path, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20, encoding="utf-8")
    real = LanguageModel.loss_and_backward
    calls = []

    def flaky(self, batch, state=None):
        calls.append(1)
        result = real(self, batch, state)
        if len(calls) == 3:
            result.loss = float("inf")
        return result

    monkeypatch.setattr(LanguageModel, "loss_and_backward", flaky)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "lm", "--text", str(text), "--out", str(out), "--bptt", "8",
                                       "--hidden-size", "8", "--embedding-dim", "4", "--batch-size", "4",
                                       "--checkpoint-every", "1", "--sample-every", "0", "--quiet"])
    assert result.exit_code == 1
    assert "step 3 (epoch 1, batch 3): the loss is inf; training stopped, the last good checkpoint, step 2" \
        in result.output
    assert load_checkpoint(out / "checkpoint").train_state["step"] == 2


# -- no pickle ---------------------------------------------------------------------------------------
def test_no_module_loads_with_pickle():
    """Loading never runs code: JSON and safetensors only. Every source file of the library and the CLI
    is parsed: no import of a pickle-based module, no np.load / torch.load call, no allow_pickle=True, no
    eval / exec."""
    root = Path(__file__).resolve().parents[1]
    sources = sorted((root / "rnncore").rglob("*.py")) + [root / "cli.py"]
    assert len(sources) > 30
    banned_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names
                          if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                found.append(f"{where} from {node.module} import")
            elif isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("eval", "exec", "np.load", "numpy.load", "torch.load") or "pickle" in name:
                    found.append(f"{where} {name}(...)")
                found += [f"{where} allow_pickle={ast.unparse(k.value)}" for k in node.keywords
                          if k.arg == "allow_pickle" and ast.unparse(k.value) != "False"]
    assert found == []


def test_a_pickle_disguised_as_a_checkpoint_is_never_executed(saved, tmp_path):
    """A file holding a pickle that would write a marker file when unpickled, put where the weights go."""
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    path, spec = saved
    (path / spec["weights"]).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="is truncated or corrupted"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(path / spec["weights"])
    assert not marker.exists()
    assert weights_path(path).name == spec["weights"]
