"""Crash safety: `rnncore train` killed with SIGKILL at random moments, checkpointing every step so
that many kills land inside a save. After every kill the run directory must hold a loadable
checkpoint; `--resume` must then finish the run with weights bit-identical to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnncore.train.checkpoint import POINTER, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards box and jolly vixens quack".split()
TRAIN = ["--bptt", 8, "--hidden-size", 16, "--embedding-dim", 8, "--layers", 2, "--dropout", 0.1,
         "--batch-size", 4, "--epochs", 2, "--checkpoint-every", 1, "--log-every", 3, "--sample-every", 0,
         "--sample-length", 1, "--seed", 3, "--quiet"]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _command(*args):
    return [sys.executable, "-c", "import cli; cli.main()", *[str(a) for a in args]]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("RNNCORE_NUMBA_CACHE", None)  # the children share this session's (warm) NUMBA_CACHE_DIR
    return env


def _start(cwd, *args):
    return subprocess.Popen(_command(*args), cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _saved_step(ckpt):
    try:
        return json.loads((ckpt / POINTER).read_text())["train_state"]["step"]
    except (FileNotFoundError, ValueError):  # not written yet (the pointer is replaced atomically)
        return 0


def _wait_for_step(proc, ckpt, step, timeout=120.0):
    """Until a checkpoint of at least ``step`` is saved or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or _saved_step(ckpt) >= step:
            return
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"the training process saved no checkpoint of step {step} in time")


def _leftovers(ckpt):
    """Files in the checkpoint directory that the pointer does not name: evidence of a save cut short."""
    spec = json.loads((ckpt / POINTER).read_text())
    named = {POINTER, spec["weights"], spec["train"]}
    return sorted(p.name for p in ckpt.iterdir() if p.name not in named)


def _step_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    rng = random.Random(20261201)
    (tmp_path / "tiny.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(400)), encoding="utf-8")
    common = ["--text", "tiny.txt", *TRAIN]

    # the uninterrupted reference, which also warms the Numba cache the children share
    ref = subprocess.run(_command("train", "lm", "--out", "ref", *common), cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    reference = load_checkpoint(tmp_path / "ref" / "checkpoint")
    steps = reference.train_state["step"]  # 2 epochs of about 60 batches
    assert reference.train_state["epoch"] == 2 and steps > 100

    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoint"
    proc = _start(tmp_path, "train", "lm", "--out", "run", *common)
    kills, cut_saves, steps_at_kill = 0, 0, []
    while kills < 6:
        # a random number of steps on, then a random moment within about one step (compute or save)
        _wait_for_step(proc, ckpt, _saved_step(ckpt) + rng.randint(5, 22))
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is not None:
            break  # it finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        # the run directory holds a checkpoint the library loads, whatever the kill interrupted
        state = load_checkpoint(ckpt)
        steps_at_kill.append(state.train_state["step"])
        cut_saves += bool(_leftovers(ckpt))
        proc = _start(tmp_path, "train", "lm", "--resume", "run")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode(errors="replace")

    assert kills >= 5, f"only {kills} kills landed before the run finished"
    assert cut_saves >= 1, "no kill landed inside a save"
    assert steps_at_kill == sorted(steps_at_kill) and steps_at_kill[-1] < steps
    final = load_checkpoint(ckpt)
    assert final.train_state["step"] == steps
    theirs, ours = reference.model.state_dict(), final.model.state_dict()
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert np.array_equal(theirs[name], ours[name]), name
    for name, buf in reference.optimizer_state["buffers"].items():
        assert np.array_equal(buf, final.optimizer_state["buffers"][name]), name
    assert final.train_state["model_rng"] == reference.train_state["model_rng"]
    # the metrics log holds each step's record once, with the losses of the uninterrupted run
    assert _step_losses(run) == _step_losses(tmp_path / "ref")
    assert [r["train_loss"] for r in final.train_state["history"]] == \
        [r["train_loss"] for r in reference.train_state["history"]]
    # nothing a killed save left behind survives the next save: the pointer and its two files only
    assert _leftovers(ckpt) == []
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "config.json", "curve.png",
                                                     "metrics.jsonl"]
    print(f"{kills} kills at steps {steps_at_kill}; {cut_saves} of them inside a save")
