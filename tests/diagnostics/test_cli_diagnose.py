"""``rnncore diagnose RUN_DIR`` and ``rnncore train ... --diagnose-every`` on tiny runs (CliRunner)."""

import json

import pytest
from click.testing import CliRunner

from cli import main

TEXT = ("The quick brown fox jumps over the lazy dog. " * 12 + "\n") * 3
TINY = ["--hidden-size", "6", "--embedding-dim", "4", "--batch-size", "4", "--quiet", "--bptt", "8",
        "--sample-every", "0", "--sample-length", "5"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, text_file):
    """Clipping at 1e-4, so every step is clipped; metrics every 3 steps, diagnostics every 2."""
    out = tmp_path_factory.mktemp("runs") / "lstm"
    result = invoke("train", "lm", "--text", text_file, "--out", out, "--cell", "lstm", "--max-steps", 6,
                    "--clip", 1e-4, "--log-every", 3, "--diagnose-every", 2, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_training_logs_clip_events_and_diagnostics(lstm_run):
    metrics = read_jsonl(lstm_run / "metrics.jsonl")
    steps = [r for r in metrics if "loss" in r]
    assert [r["step"] for r in steps] == [3, 6]
    events = [r for r in metrics if r.get("clipped")]
    assert [r["step"] for r in events] == [1, 2, 3, 4, 5, 6]  # every step exceeded the threshold
    assert all(r["grad_norm"] > r["clip_norm"] == 1e-4 for r in events)
    assert [r["grad_norm"] for r in events if r["step"] in (3, 6)] == [r["grad_norm"] for r in steps]
    records = read_jsonl(lstm_run / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    rnn = records[0]["rnn"]
    assert [s["block"] for s in rnn["spectra"]] == ["all", "i", "f", "g", "o"]
    assert [s["gate"] for s in rnn["saturation"]] == ["i", "f", "g", "o"]
    assert len(rnn["grad_norms"]["forward"]) == 8 + 1  # bptt 8: states 0..8


def test_diagnostics_leave_the_training_unchanged(tmp_path, text_file):
    """The diagnostics pass runs in eval mode and draws no random numbers: with dropout between two
    layers the losses are the same with and without --diagnose-every."""
    losses = []
    for every in (0, 1):
        out = tmp_path / f"run{every}"
        result = invoke("train", "lm", "--text", text_file, "--out", out, "--cell", "gru", "--layers", 2,
                        "--dropout", 0.3, "--max-steps", 4, "--log-every", 1, "--diagnose-every", every,
                        *TINY)
        assert result.exit_code == 0, result.output
        losses.append([r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r])
        assert (out / "diagnostics.jsonl").exists() == bool(every)
    assert losses[0] == losses[1]


def test_resume_drops_records_after_the_checkpoint(tmp_path, text_file):
    """Diagnostics records and clip events after the checkpoint go; the resumed run writes them again."""
    out = tmp_path / "run"
    assert invoke("train", "lm", "--text", text_file, "--out", out, "--max-steps", 4, "--checkpoint-every", 2,
                  "--diagnose-every", 1, "--clip", 1e-4, *TINY).exit_code == 0
    for name, extra in (("diagnostics.jsonl", {"step": 99}),
                        ("metrics.jsonl", {"step": 99, "clipped": True})):
        path = out / name
        path.write_text(path.read_text() + json.dumps(extra) + "\n")  # as if interrupted after step 4
    result = invoke("train", "lm", "--resume", out, "--max-steps", 6)
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_jsonl(out / "diagnostics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r.get("clipped")] == [1, 2, 3, 4, 5, 6]


def test_diagnose_writes_plots_json_and_a_report(lstm_run, tmp_path):
    out = tmp_path / "diag"
    result = invoke("diagnose", lstm_run, "--out", out, "--steps", 12, "--sequences", 2)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("verdict: ")
    for name in ("gradient_flow.png", "singular_values.png", "saturation.png", "training.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    summary = json.loads((out / "diagnostics.json").read_text())
    assert summary["verdict"] in result.output
    assert summary["training"]["clipped_steps"] == 6
    rnn = summary["layers"]["rnn"]
    assert rnn["steps"] == 12 and rnn["length"] >= 12  # two 8-step chunks joined, then cut to 12
    (direction,) = rnn["directions"]
    assert len(direction["jacobian"]["spectral"]) == 13 and len(direction["jacobian"]["spectral"][0]) == 2
    assert direction["jacobian"]["spectral"][-1] == [1.0, 1.0]  # J_T = [I, 0]
    assert len(direction["grad_norms"]["h"]) == rnn["length"] + 1
    report = (out / "report.md").read_text()
    assert "**Verdict**" in report and "![" in report and "clipped" in report
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_diagnose_a_bidirectional_stacked_classifier(tmp_path):
    """Separate sequences of different lengths: the rows of the longest length are diagnosed; both
    directions of both layers get a verdict, the top layer a loss gradient through h_n."""
    data = tmp_path / "labels.tsv"
    words = ["apple", "kiwi", "banana", "fig", "cherry", "plum", "grape", "melon", "lemon", "lime"] * 4
    data.write_text("".join(f"{'long' if len(w) > 4 else 'short'}\t{w}\n" for w in words), encoding="utf-8")
    out = tmp_path / "clf"
    result = invoke("train", "classify", "--data", data, "--out", out, "--cell", "gru", "--layers", 2,
                    "--bidirectional", "--hidden-size", 5, "--embedding-dim", 3, "--batch-size", 8,
                    "--epochs", 1, "--quiet", "--valid-fraction", 0.2, "--diagnose-every", 2)
    assert result.exit_code == 0, result.output
    record = read_jsonl(out / "diagnostics.jsonl")[0]["rnn"]
    assert sorted(record["grad_norms"]) == ["forward", "reverse"]  # the loss reads both top directions' h_n
    assert len(record["saturation"]) == 2 * 2 * 3  # layers x directions x gates r, z, n
    result = invoke("diagnose", out, "--steps", 6, "--sequences", 1)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "diagnostics" / "diagnostics.json").read_text())
    dirs = summary["layers"]["rnn"]["directions"]
    assert [(d["layer"], d["direction"]) for d in dirs] == [(0, "forward"), (0, "reverse"), (1, "forward"),
                                                            (1, "reverse")]
    assert all("grad_norms" in d for d in dirs[2:]) and not any("grad_norms" in d for d in dirs[:2])
    assert (out / "diagnostics" / "saturation.png").is_file()


def test_diagnose_errors(tmp_path):
    result = invoke("diagnose", tmp_path)
    assert result.exit_code == 1 and "not a run directory (no config.json)" in result.output
    result = invoke("diagnose", tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output
