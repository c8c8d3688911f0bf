"""`rnncore verify --quick`: every derivation passes, every check the issue lists is in results.json,
the JSON matches its documented fields, and the report is self-contained with its plots."""

import json
import re

import pytest
from click.testing import CliRunner

from cli import main
from derivations import DERIVATIONS, NAMES
from derivations.checks import CHECK_FIELDS, RESULTS_FIELDS, validate_results
from rnncore.report import slug


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of everything through the CLI, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("verify")
    result = CliRunner().invoke(main, ["verify", "--quick", "--out", str(out)])
    return out, result


@pytest.fixture(scope="module")
def results(quick_run):
    out, _ = quick_run
    return json.loads((out / "results.json").read_text())


def test_quick_run_passes(quick_run):
    out, result = quick_run
    assert result.exit_code == 0, result.output
    for k, name in enumerate(NAMES, 1):
        assert f"[{k}/{len(NAMES)}] {name}:" in result.output  # progress lines
    assert "all " in result.output
    assert " checks passed" in result.output
    assert re.search(r"^family\s+checks\s+failed\s+worst abs\s+worst rel", result.output, re.M)


def test_results_json_matches_its_documented_fields(results):
    assert validate_results(results) == []
    assert set(results) == set(RESULTS_FIELDS)
    assert results["format"] == "rnncore-verify-results"
    assert results["quick"] is True
    assert all(set(r) == set(CHECK_FIELDS) for r in results["checks"])
    assert set(results["families"]) == set(NAMES)


def test_validator_finds_problems(results):
    broken = json.loads(json.dumps(results))
    broken["checks"][0]["passed"] = "yes"
    del broken["checks"][1]["tolerance"]
    broken["checks"][2]["name"] = broken["checks"][3]["name"]
    problems = validate_results(broken)
    assert len(problems) >= 3
    assert validate_results({"checks": []}) != []


def test_every_listed_check_is_present_and_passed(results):
    names = {r["name"] for r in results["checks"]}
    assert all(r["passed"] for r in results["checks"])
    expected = [
        # cells: every Elman nonlinearity, LSTM, both GRU placements; a stack, a bidirectional layer and
        # unequal lengths; weights, biases, input and initial state
        *(f"cells/rnn_{a}/{p}" for a in ("tanh", "relu", "sigmoid", "identity")
          for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "x", "h0", "loss")),
        "cells/lstm/c0", "cells/gru_reset_after/weight_hh_l0", "cells/gru_reset_before/weight_hh_l0",
        "cells/rnn_tanh_stacked_bidir_lengths/weight_hh_l1_reverse",
        "cells/gru_reset_before_stacked_bidir_lengths/weight_ih_l1",
        "cells/method/rnn_tanh_T2",
        # LSTM variants: projection, peepholes, clipping, coupled gate; all at once stacked, bidirectional
        *(f"lstm_variants/lstm_proj/{p}" for p in ("weight_hr_l0", "weight_hh_l0", "h0", "c0", "loss")),
        *(f"lstm_variants/lstm_peephole/{p}" for p in ("weight_peephole_l0", "c0", "loss")),
        "lstm_variants/lstm_clip/weight_ih_l0", "lstm_variants/lstm_coupled/bias_hh_l0",
        "lstm_variants/lstm_all_stacked_bidir_lengths/weight_hr_l1_reverse",
        "lstm_variants/lstm_all_stacked_bidir_lengths/weight_peephole_l1_reverse",
        "lstm_variants/method/lstm_clip_coupled_T2",
        # local derivatives
        *(f"local/{a}/{k}" for a in ("sigmoid", "tanh", "relu", "identity") for k in ("identity", "kernel")),
        "local/lstm/gate_jacobian_identity", "local/gru_reset_after/gate_jacobian_identity",
        "local/gru_reset_before/gate_jacobian_identity", "local/lstm/step_jacobian",
        "local/gru_reset_after/step_jacobian", "local/gru_reset_before/step_jacobian",
        # softmax cross-entropy
        "softmax/symbolic_C", "softmax/kernel_mean/grad", "softmax/softmax_minus_y",
        # scalar recurrence
        "scalar/symbolic_T", "scalar/recursion_T1_20",
        *(f"scalar/{a}_w{w}/dw" for a in ("relu", "identity") for w in (0.9, 1.0, 1.1)),
        # BPTT recurrence
        *(f"bptt/induction/{k}" for k in range(6)), "bptt/expansion_t1_6_matrix",
        *(f"bptt/closed_form/{c}" for c in ("rnn_tanh", "lstm", "gru_reset_after", "gru_reset_before")),
        # autoencoder
        "autoencoder/symbolic/dW", "autoencoder/untied/decoder_angle", "autoencoder/untied/loss",
        "autoencoder/untied/V_minus_WT", "autoencoder/weight_decay/V_minus_WT", "autoencoder/tied/V_minus_WT",
        "autoencoder/tied/loss", "autoencoder/weight_decay/encoder_angle",
        # initialisation study
        *(f"init/g{g}/{k}" for g in (1.5, 2.0, 3.0) for k in ("first_step", "per_step", "gradient_per_step")),
        # LayerNorm LSTM and GRU: every LN parameter, a stack with lengths, H = 1, LN's local derivative
        *(f"layer_norm/lstm/layernorm_{p}_{k}_l0" for p in ("ih", "hh", "c") for k in ("weight", "bias")),
        *(f"layer_norm/gru/{n}"
          for n in ("layernorm_ih_weight_l0", "layernorm_hh_bias_l0", "weight_hh_l0", "h0")),
        "layer_norm/lstm/c0", "layer_norm/lstm_stacked_bidir_lengths/layernorm_c_weight_l1_reverse",
        "layer_norm/gru_stacked_bidir_lengths/weight_ih_l1", "layer_norm/lstm_H1/layernorm_c_weight_l0",
        "layer_norm/gru_nobias_eps1e-2/x", "layer_norm/ln_jacobian_identity_N3",
        "layer_norm/ln_backward_kernel_N1",
        # regularisers, with the layer's masks in the unrolled network
        *(f"regularisers/{c}_{r}/{p}" for c in ("rnn_tanh", "lstm")
          for r in ("input_dropout", "recurrent_dropout", "zoneout", "weight_drop", "zoneout_eval")
          for p in ("loss", "weight_hh_l0", "h0", "x")),
        "regularisers/lstm_zoneout_cell/c0", "regularisers/lstm_all_stacked_bidir_lengths/weight_hh_l1_reverse",
    ]
    missing = [n for n in expected if n not in names]
    assert not missing, missing


def test_gradient_checks_agree_to_1e10(results):
    for r in results["checks"]:
        if r["family"] in ("cells", "lstm_variants", "bptt", "layer_norm", "regularisers") and r["error_kind"] == "rel":
            assert r["max_rel_error"] <= 1e-10, r["name"]


def test_plots_are_written(quick_run):
    out, _ = quick_run
    for name in ("scalar_recurrence", "hidden_gradient_norms", "init_study", "autoencoder"):
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 10_000


def test_html_report_is_self_contained(quick_run):
    out, _ = quick_run
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", page)
    assert "<script" not in page
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert images
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert len(re.findall(r"<figure>", page)) == 4
    for _, title in DERIVATIONS.values():  # one section per derivation, linked from the summary
        assert f'<h2 id="{slug(title)}">' in page
        assert f'href="#{slug(title)}"' in page
    md = (out / "report.md").read_text()
    for png in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / png).exists()


def test_help_lists_the_derivations():
    result = CliRunner().invoke(main, ["verify", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert ", ".join(NAMES) in text
