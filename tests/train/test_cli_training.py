"""rnncore train lm|classify, generate, evaluate, predict through click's CliRunner on tiny runs."""

import json

import pytest
from click.testing import CliRunner

from cli import main

TEXT = ("The quick brown fox jumps over the lazy dog. " * 12 + "\n") * 3
TINY = ["--hidden-size", "8", "--embedding-dim", "4", "--batch-size", "4", "--quiet", "--log-every", "1"]


def invoke(*args, input=None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("runs") / "lm"
    result = invoke("train", "lm", "--text", text_file, "--out", out, "--bptt", 8, "--max-steps", 6,
                    "--sample-every", 3, "--sample-length", 12, "--seed", 4, *TINY)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_lm_writes_a_run_directory(lm_run):
    out, output = lm_run
    assert "--- sample after step 3" in output and "validation: loss" in output
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 4 and config["task"] == "lm" and config["text"].endswith("text.txt")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("valid_perplexity" in r for r in records)
    assert {"loss", "grad_norm", "lr", "tokens_per_s"} <= set(records[0])
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint" / "checkpoint.json").is_file()


def test_generate(lm_run):
    out, _ = lm_run
    result = invoke("generate", out, "--prime", "The q", "--length", 15, "--seed", 1, "-n", 2)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("The q")]
    assert len(lines) >= 1
    again = invoke("generate", out, "--prime", "The q", "--length", 15, "--seed", 1, "-n", 2)
    assert again.output == result.output  # the seed fixes the samples


def test_evaluate_on_a_file_and_on_the_held_out_split(lm_run, text_file):
    out, _ = lm_run
    result = invoke("evaluate", out, "--data", text_file, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["perplexity"] > 1 and metrics["tokens"] > 0
    result = invoke("evaluate", out)
    assert result.exit_code == 0 and "perplexity" in result.output


def test_predict_from_stdin(lm_run):
    out, _ = lm_run
    result = invoke("predict", out, "--length", 5, input="The\nfox\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("The") and lines[1].startswith("fox")


def test_resume_matches_an_uninterrupted_run(tmp_path, text_file):
    common = ["--text", text_file, "--bptt", 8, "--sample-every", 0, "--sample-length", 3, "--dropout", 0.1,
              "--layers", 2, *TINY]
    assert invoke("train", "lm", "--out", tmp_path / "full", "--max-steps", 9, *common).exit_code == 0
    assert invoke("train", "lm", "--out", tmp_path / "part", "--max-steps", 5, *common).exit_code == 0
    result = invoke("train", "lm", "--resume", tmp_path / "part", "--max-steps", 9)
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if "loss" in r]

    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    assert len(losses(tmp_path / "full")) == 9


def test_an_existing_run_needs_overwrite(lm_run, text_file):
    out, _ = lm_run
    result = invoke("train", "lm", "--text", text_file, "--out", out, "--max-steps", 1, *TINY)
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_bad_options():
    result = CliRunner().invoke(main, ["train", "lm", "--text", "/no/such/file.txt"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["train", "lm", "--lr", "-1"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["generate", "/no/such/run"])
    assert result.exit_code == 2


def test_dry_run_prints_the_config(tmp_path):
    result = invoke("train", "lm", "--out", tmp_path / "x", "--dry-run", "--cell", "gru", "--seed", 9)
    assert result.exit_code == 0
    config = json.loads(result.output)
    assert config["cell"] == "gru" and config["seed"] == 9 and not (tmp_path / "x").exists()


def test_train_lm_on_lines_generates_from_bos(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["anna", "bob", "carl", "dora", "emma", "fred", "gina", "hugo"] * 4) + "\n")
    out = tmp_path / "names"
    result = invoke("train", "lm", "--text", names, "--lines", "--out", out, "--epochs", 2,
                    "--valid-fraction", 0.2, "--sample-every", 0, "--sample-length", 8, *TINY)
    assert result.exit_code == 0, result.output
    result = invoke("generate", out, "--length", 10, "-n", 3)
    assert result.exit_code == 0 and len(result.output.splitlines()) == 3


def test_train_classify_on_a_labelled_file(tmp_path):
    data = tmp_path / "labels.tsv"
    rows = [("pos", "good great fine"), ("neg", "bad awful poor"), ("pos", "great good"),
            ("neg", "poor bad")] * 10
    data.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    out = tmp_path / "clf"
    result = invoke("train", "classify", "--data", data, "--out", out, "--epochs", 3, "--tokenizer", "word",
                    "--bidirectional", "--merge", "sum", *TINY)
    assert result.exit_code == 0, result.output
    assert "test: accuracy" in result.output
    result = invoke("predict", out, input="good great\nawful bad\n")
    assert result.exit_code == 0, result.output
    labels = [line.split("\t")[0] for line in result.output.splitlines()]
    assert len(labels) == 2 and set(labels) <= {"pos", "neg"}
    result = invoke("evaluate", out, "--data", data, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["examples"] == 40


def test_text_that_is_not_utf8(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xb2 not utf-8 \xc3")
    result = CliRunner().invoke(main, ["train", "lm", "--text", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not UTF-8" in result.output


def test_word_level_generation_keeps_a_space_after_the_prime(tmp_path, text_file):
    out = tmp_path / "w"
    result = invoke("train", "lm", "--text", text_file, "--tokenizer", "word", "--lower", "--out", out,
                    "--bptt", 4, "--max-steps", 2, "--sample-every", 0, "--sample-length", 3, *TINY)
    assert result.exit_code == 0, result.output
    text = invoke("generate", out, "--prime", "the", "--length", 3).output.strip()
    assert text.startswith("the ") and len(text.split()) >= 2
