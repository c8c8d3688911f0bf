"""The same seed gives bit-identical results: in one process, across processes, across a cold and a
warm Numba cache, and across a checkpoint and resume in a new process.

Subprocesses inherit the session's NUMBA_CACHE_DIR (tests/conftest.py), so after the first one they
load the compiled kernels instead of compiling them; the cold-cache test uses its own empty one.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _digest(array):
    array = np.ascontiguousarray(array)
    return f"{array.dtype}{array.shape}:" + hashlib.sha256(array.tobytes()).hexdigest()[:24]


DEFAULT_CELLS = ("lstm", "gru", "gru_reset_before", "rnn_relu", "lstm_variants", "lstm_layer_norm",
                 "gru_layer_norm")


def fingerprint(dtypes=("float32", "float64"), cells=DEFAULT_CELLS, seed=0, backward=True):
    """{name: digest} of a word vocabulary built by frequency (ties), a seeded split and bucketing, and
    everything a seeded layer computes: initial weights, training forward (with dropout between
    layers), inference forward, and with ``backward`` the backward pass and a generation step."""
    import rnncore

    makers = {
        "lstm": lambda **kw: rnncore.LSTM(**kw),
        "gru": lambda **kw: rnncore.GRU(**kw),
        "gru_reset_before": lambda **kw: rnncore.GRU(reset_after=False, **kw),
        "rnn_relu": lambda **kw: rnncore.RNN(nonlinearity="relu", **kw),
        "rnn_tanh": lambda **kw: rnncore.RNN(**kw),
        "lstm_variants": lambda **kw: rnncore.LSTM(proj_size=3, peephole=True, gate_clip=2.0, **kw),
        "lstm_layer_norm": lambda **kw: rnncore.LSTM(layer_norm=True, **kw),
        "gru_layer_norm": lambda **kw: rnncore.GRU(layer_norm=True, **kw),
    }
    from rnncore.data import Vocab
    from rnncore.data.batching import bucket_batches, split_indices
    from rnncore.data.tokenize import make_tokenizer

    words = make_tokenizer("word", lower=True)("the cat and the dog and a bird saw a cat, the end. " * 3)
    vocab = Vocab.build([words], order="frequency")  # many ties in frequency: broken by the token
    result = {"data/vocab": _digest(np.array([ord(c) for c in "\n".join(vocab.itos)])),
              "data/split": _digest(np.concatenate(split_indices(50, seed=seed))),
              "data/buckets": _digest(np.concatenate(list(bucket_batches(np.arange(40) % 7 + 1, 4,
                                                                         np.random.default_rng(seed)))))}
    for dtype in dtypes:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((6, 3, 4)).astype(dtype)
        lengths = [6, 4, 1]
        for k, name in enumerate(cells):
            key = f"{dtype}/{name}"
            m = makers[name](input_size=4, hidden_size=5, num_layers=2, bidirectional=True, dropout=0.3,
                             dtype=dtype, seed=seed + k)
            for pname, value in m.named_parameters():
                result[f"{key}/init/{pname}"] = _digest(value)
            out, state = m(x, lengths=lengths)
            states = state if isinstance(state, tuple) else (state,)
            result[f"{key}/out"] = _digest(out)
            result[f"{key}/state"] = _digest(np.concatenate([s.ravel() for s in states]))  # h, c
            if backward:
                g_out = rng.standard_normal(out.shape).astype(dtype)
                g_states = tuple(rng.standard_normal(s.shape).astype(dtype) for s in states)
                dx, d0 = m.backward(g_out, g_states if len(g_states) > 1 else g_states[0])
                result[f"{key}/dx"] = _digest(dx)
                d_states = d0 if isinstance(d0, tuple) else (d0,)
                result[f"{key}/dstate0"] = _digest(np.concatenate([d.ravel() for d in d_states]))
                for pname, grad in m.grads.items():
                    result[f"{key}/grad/{pname}"] = _digest(grad)
                uni = makers[name](input_size=4, hidden_size=5, num_layers=2, dtype=dtype, seed=seed + k)
                result[f"{key}/step"] = _digest(uni.step(x[0])[0])
            m.eval()
            with rnncore.no_grad():
                result[f"{key}/out_infer"] = _digest(m(x, lengths=lengths)[0])
    return result


def python(code, env=None):
    """Run ``code`` in a new interpreter with this checkout importable; returns its stdout."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


FINGERPRINT = "import json, test_determinism as t; print(json.dumps(t.fingerprint(**{kw})))"


def test_fingerprint_sees_a_different_seed():
    a = fingerprint(dtypes=("float64",), cells=("lstm",))
    b = fingerprint(dtypes=("float64",), cells=("lstm",), seed=1)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if "/init/" in k or k.endswith(("/out", "/dx")))


def test_same_seed_same_bits_in_another_process():
    """A new process with another hash seed (dict and set order) and this one agree bit for bit."""
    here = fingerprint()
    hash_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    there = json.loads(python(FINGERPRINT.format(kw={}), env={"PYTHONHASHSEED": hash_seed}))
    assert there == here, [k for k in here if there.get(k) != here[k]]


def test_cold_and_warm_numba_cache_give_the_same_bits(tmp_path):
    """Kernels compiled now (empty cache), loaded from that cache, or loaded from the session's cache."""
    kw = {"dtypes": ("float64",), "cells": ("rnn_tanh",), "backward": False}
    here = fingerprint(**kw)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    cold = json.loads(python(FINGERPRINT.format(kw=kw), env=env))
    assert any((tmp_path / "cache").rglob("*.nbc")), "the cold run wrote no cache"
    warm = json.loads(python(FINGERPRINT.format(kw=kw), env=env))
    assert cold == here
    assert warm == here


BACKWARD_DIGEST = """
import hashlib
import numpy as np
import rnncore

digest = hashlib.sha256()
for dtype in (np.float64, np.float32):
    for make in (lambda **kw: rnncore.LSTM(**kw), lambda **kw: rnncore.GRU(**kw),
                 lambda **kw: rnncore.GRU(reset_after=False, **kw),
                 lambda **kw: rnncore.LSTM(layer_norm=True, **kw),
                 lambda **kw: rnncore.GRU(layer_norm=True, **kw),
                 lambda **kw: rnncore.LSTM(peephole=True, gate_clip=2.0, **kw)):
        m = make(input_size=32, hidden_size=128, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
        x = np.random.default_rng(0).standard_normal((12, 16, 32)).astype(dtype)
        y, _ = m(x, lengths=np.arange(16) % 12 + 1)
        dx, _ = m.backward(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
        for a in (y, dx, *m.grads.values()):
            digest.update(a.tobytes())
print(digest.hexdigest())
"""


def test_backward_passes_agree_between_a_cold_and_a_warm_numba_cache(tmp_path):
    """LSTM, GRU (both reset placements), layer-normalised LSTM and GRU, and peephole LSTM with a gate clip:
    gradients at B 16, H 128, where their loops vectorise. A process that compiles the kernels and one that
    loads them from its cache agree bit for bit. (They did not while a helper of those backward passes was
    compiled on its own as well as inside its caller: each process ran another copy.)"""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    cold = python(BACKWARD_DIGEST, env=env)
    warm = python(BACKWARD_DIGEST, env=env)
    assert cold == warm


THREADED = """
import hashlib, sys
import numpy as np
import rnncore
from rnncore.threads import blas_threads

def threaded_run(n_threads):
    # B=16, H=128: large enough for OpenBLAS to split the GEMMs between threads
    out = {}
    with blas_threads(n_threads):
        for dtype in (np.float32, np.float64):
            m = rnncore.LSTM(32, 128, bidirectional=True, dtype=dtype, seed=0)
            x = np.random.default_rng(0).standard_normal((12, 16, 32)).astype(dtype)
            y, _ = m(x, lengths=np.arange(16) % 12 + 1)
            dx, _ = m.backward(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
            grads = np.concatenate([g.ravel() for g in m.grads.values()])
            out[np.dtype(dtype).name] = (y, dx, grads)
    return out

if __name__ == "__main__":
    print(hashlib.sha256(b"".join(a.tobytes() for v in threaded_run(int(sys.argv[1])).values() for a in v))
          .hexdigest())
"""


def test_a_fixed_blas_thread_count_gives_the_same_bits_in_another_process(tmp_path):
    """Two BLAS threads here and in a new process: the same bits. One thread against two: the same
    values within rounding (not always the same bits: see docs/reliability.md, Determinism)."""
    script = tmp_path / "threaded.py"
    script.write_text(THREADED, encoding="utf-8")
    namespace = {}
    exec(compile(THREADED, str(script), "exec"), namespace)
    two, one = namespace["threaded_run"](2), namespace["threaded_run"](1)
    here = hashlib.sha256(b"".join(a.tobytes() for v in two.values() for a in v)).hexdigest()
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    there = subprocess.run([sys.executable, str(script), "2"], env=full_env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert there == here
    for dtype, rtol in (("float32", 1e-5), ("float64", 1e-13)):
        for a, b in zip(one[dtype], two[dtype]):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))


# -- training, checkpoint and resume in separate processes ------------------------------------------------
TEXT = ("The quick brown fox jumps over the lazy dog. " * 12 + "\n") * 3
TRAIN = ["--bptt", 8, "--hidden-size", 8, "--embedding-dim", 4, "--batch-size", 4, "--layers", 2,
         "--dropout", 0.2, "--log-every", 1, "--sample-every", 0, "--sample-length", 40, "--seed", 3]


def cli(*args):
    code = f"import sys; from cli import main; main({[str(a) for a in args]!r})"
    return python(code)


def run_record(out):
    """The checkpoint's weights and {step: loss} from the metrics log of the run directory ``out``."""
    from rnncore.train.checkpoint import weights_path

    weights = load_file(weights_path(out / "checkpoint"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    return weights, losses


def last_sample(output):
    """(header, text) of the last sample a training run printed (the text may span lines)."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("--- sample"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("validation:"))
    return lines[start], "\n".join(lines[start + 1 : end])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """9 steps in one process; 5 steps, then a resume to 9 in a second and a third process."""
    tmp = tmp_path_factory.mktemp("determinism")
    text = tmp / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    common = ["--text", text, *TRAIN]
    outputs = {
        "full": cli("train", "lm", "--out", tmp / "full", "--max-steps", 9, *common),
        "part": cli("train", "lm", "--out", tmp / "part", "--max-steps", 5, *common),
    }
    outputs["resumed"] = cli("train", "lm", "--resume", tmp / "part", "--max-steps", 9)
    return tmp, outputs


def test_resume_in_a_new_process_is_bit_identical(runs):
    """5 steps, checkpoint, 4 more in a new process == 9 uninterrupted in another: weights, every
    step's loss in the metrics log, and the text sampled with the same seed."""
    from rnncore.train.checkpoint import load_model

    tmp, outputs = runs
    assert "resumed" in outputs["resumed"] and "at step 5" in outputs["resumed"]
    w_full, losses_full = run_record(tmp / "full")
    w_part, losses_part = run_record(tmp / "part")
    assert sorted(losses_full) == list(range(1, 10))
    assert len(set(losses_full.values())) == 9  # the losses change from step to step
    assert losses_part == losses_full  # the metrics log holds steps 1-5 from one process, 6-9 from the next
    assert w_part.keys() == w_full.keys()
    for name in w_full:
        assert w_part[name].dtype == w_full[name].dtype, name
        assert w_part[name].tobytes() == w_full[name].tobytes(), name
    header, sample = last_sample(outputs["resumed"])
    assert header.startswith("--- sample after step 9") and len(sample) > 20
    assert (header, sample) == last_sample(outputs["full"])
    validation = [line.split(" (")[0] for o in (outputs["full"], outputs["resumed"])
                  for line in o.splitlines() if line.startswith("validation:")]
    assert validation[0] == validation[1]  # the resumed process evaluates the model it trained
    epoch_end = [[r for r in map(json.loads, (tmp / run / "metrics.jsonl").read_text().splitlines())
                  if "train_loss" in r and r["step"] == 9] for run in ("full", "part")]
    for key in ("train_loss", "valid_loss"):  # train_loss: the mean over the whole epoch so far
        assert epoch_end[0][0][key] == epoch_end[1][0][key], key
    a, b = load_model(tmp / "full" / "checkpoint"), load_model(tmp / "part" / "checkpoint")
    assert a.generate("The q", 30, temperature=1.0, seed=11, num_samples=2) == \
        b.generate("The q", 30, temperature=1.0, seed=11, num_samples=2)


def test_resume_between_two_log_records_logs_the_same_records(tmp_path):
    """Stopped at step 5 with a record every 3 steps: the step-6 record still averages steps 4-6,
    and the epoch's train_loss covers every step of the epoch."""
    from rnncore.data import Vocab
    from rnncore.data.sources import StreamSource
    from rnncore.models.language_model import LanguageModel
    from rnncore.train import Adam, Trainer

    vocab = Vocab(list("abcdefgh"))
    ids = np.random.default_rng(0).integers(4, len(vocab), size=200)

    def records(name, steps, resume=False):
        if resume:
            trainer = Trainer.resume(tmp_path / name, log_every=3)
        else:
            model = LanguageModel(vocab, embedding_dim=4, hidden_size=6, dropout=0.1, seed=2)
            trainer = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / name, log_every=3)
        trainer.fit(StreamSource(ids, 4, 7, seed=1), epochs=1, max_steps=steps)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        timing = ("tokens_per_s", "seconds")
        return [{k: v for k, v in r.items() if k not in timing} for r in map(json.loads, lines)]

    full = records("full", 7)
    records("split", 5)
    split = records("split", 7, resume=True)
    assert [r["step"] for r in full if "loss" in r] == [3, 6]
    assert [r for r in split if "loss" in r] == [r for r in full if "loss" in r]
    assert [r for r in split if r.get("step") == 7] == [r for r in full if r.get("step") == 7]


def test_resume_into_a_model_with_another_config_is_an_error(tmp_path):
    from rnncore.data import Vocab
    from rnncore.data.sources import StreamSource
    from rnncore.models.language_model import LanguageModel
    from rnncore.train import Adam, Trainer

    vocab = Vocab(list("abcdefgh"))
    model = LanguageModel(vocab, embedding_dim=4, hidden_size=6, seed=2)
    trainer = Trainer(model, Adam(model, lr=0.01), out_dir=tmp_path / "run")
    trainer.fit(StreamSource(np.arange(100) % 8, 4, 5), max_steps=2)
    other = LanguageModel(vocab, embedding_dim=4, hidden_size=7, seed=2)
    with pytest.raises(ValueError, match=r"model: .* holds a LanguageModel with config .*'hidden_size': 6"):
        Trainer.resume(tmp_path / "run", model=other)
    same = LanguageModel(vocab, embedding_dim=4, hidden_size=6, seed=2)
    for _, value in same.named_parameters():
        value.fill(0.5)  # replaced by the checkpoint's weights
    resumed = Trainer.resume(tmp_path / "run", model=same)
    assert resumed.model is same and resumed.step == 2
    for name, value in model.named_parameters():
        np.testing.assert_array_equal(dict(same.named_parameters())[name], value)


def test_a_resumed_classifier_run_reports_the_model_it_trained(tmp_path):
    """Every task resumes through the same path: the test metrics printed after a resume are those
    of the trained model, as in an uninterrupted run (in-process here; the LM test above is across
    processes)."""
    from click.testing import CliRunner

    from cli import main

    data = tmp_path / "labels.tsv"
    rows = [("pos", "good great fine"), ("neg", "bad awful poor"), ("pos", "great good"), ("neg", "poor bad")]
    data.write_text("".join(f"{label}\t{text}\n" for label, text in rows * 10), encoding="utf-8")
    common = ["--data", data, "--tokenizer", "word", "--hidden-size", 8, "--embedding-dim", 4,
              "--batch-size", 4, "--quiet", "--log-every", 1, "--lr", 0.05]

    def invoke(*args):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [line.split(" (")[0] for line in result.output.splitlines() if line.startswith("test:")]

    full = invoke("train", "classify", "--out", tmp_path / "full", "--max-steps", 10, *common)
    invoke("train", "classify", "--out", tmp_path / "part", "--max-steps", 4, *common)
    resumed = invoke("train", "classify", "--resume", tmp_path / "part", "--max-steps", 10)
    assert resumed == full and len(full) == 1
