"""rnncore export RUN --onnx / --safetensors on tiny trained runs, through click's CliRunner."""

import numpy as np
import pytest
from click.testing import CliRunner

import rnncore
from cli import main
from rnncore.data.batching import pad_sequences
from rnncore.io import load
from rnncore.train.checkpoint import load_model

ort = pytest.importorskip("onnxruntime")

TINY = ["--hidden-size", "6", "--embedding-dim", "4", "--batch-size", "4", "--quiet", "--log-every", "1"]


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def run_ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def test_export_a_language_model(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    run = tmp_path / "lm"
    result = invoke("train", "lm", "--text", text, "--out", run, "--bptt", 8, "--max-steps", 3,
                    "--sample-every", 0, "--sample-length", 2, "--layers", 2, *TINY)
    assert result.exit_code == 0, result.output
    result = invoke("export", run, "--onnx", tmp_path / "lm.onnx",
                    "--safetensors", tmp_path / "lm.safetensors")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "lm.onnx").is_file()
    model = load_model(run / "checkpoint")
    ids = model.encode("the lazy fox")[:, None]
    with rnncore.no_grad():
        logits, (h_n, c_n) = model.logits(ids)
    zeros = np.zeros((2, 1, 6), np.float32)
    got = run_ort(tmp_path / "lm.onnx", {"ids": ids, "h0": zeros, "c0": zeros})
    for name, value in (("logits", logits), ("h_n", h_n), ("c_n", c_n)):
        assert np.max(np.abs(got[name] - value)) < 1e-5 * np.max(np.abs(value)), name
    again = load(tmp_path / "lm.safetensors")
    assert again.get_config() == model.get_config()
    with rnncore.no_grad():
        np.testing.assert_array_equal(again.logits(ids)[0], logits)


def test_export_a_classifier_and_errors(tmp_path):
    data = tmp_path / "labels.tsv"
    rows = [("pos", "good great fine"), ("neg", "bad awful poor"), ("pos", "great"), ("neg", "poor bad")] * 5
    data.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    run = tmp_path / "clf"
    result = invoke("train", "classify", "--data", data, "--out", run, "--epochs", 1, "--bidirectional",
                    "--cell", "lstm", *TINY)
    assert result.exit_code == 0, result.output
    result = invoke("export", run, "--onnx", tmp_path / "clf.onnx", "--opset", 17)
    assert result.exit_code == 0, result.output
    model = load_model(run / "checkpoint")
    ids, lengths = pad_sequences([model._encode_text(t) for t in ("good great", "bad", "awful poor fine")],
                                 model.vocab.pad_id)
    got = run_ort(tmp_path / "clf.onnx", {"ids": ids, "lengths": lengths})
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(ids, lengths), atol=1e-6)

    result = invoke("export", run, "--onnx", tmp_path / "full.onnx", "--no-lengths")
    assert result.exit_code == 0, result.output
    sess = ort.InferenceSession(str(tmp_path / "full.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["ids"]

    result = invoke("export", run)
    assert result.exit_code != 0 and "give --onnx PATH and/or --safetensors PATH" in result.output
    result = invoke("export", tmp_path, "--onnx", tmp_path / "x.onnx")
    assert result.exit_code != 0 and "no checkpoint found" in result.output
    result = invoke("export", run, "--onnx", tmp_path / "missing-dir" / "x.onnx")
    assert result.exit_code != 0 and "Error:" in result.output
