"""The click CLI through CliRunner: --version and info (text and JSON)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import rnncore
from cli import main
from rnncore._info import KERNEL_FUNCTIONS, KERNEL_MODULES, gather_info

ROOT = Path(__file__).resolve().parents[1]


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == rnncore.__version__


def test_help_lists_info():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_info_text():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"rnncore   {rnncore.__version__}" in out
    for name in ("python", "numpy", "numba", "scipy", "sympy", "click"):
        assert f"  {name} " in out
    assert "BLAS and OpenMP libraries (threadpoolctl)" in out
    assert "blas: " in out  # numpy always loads a BLAS
    assert "threading layer" in out
    cache_lines = [line for line in out.splitlines() if line.startswith("numba cache: ")]
    assert len(cache_lines) == 1
    assert "/12 kernels have a fresh cached index" in cache_lines[0] or "disabled" in cache_lines[0]


def test_info_json():
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"versions", "blas", "numba", "env", "numba_cache"}
    assert report["versions"]["rnncore"] == rnncore.__version__
    assert {"python", "numpy", "numba", "scipy", "sympy", "click"} <= set(report["versions"])
    blas = [lib for lib in report["blas"] if lib["user_api"] == "blas"]
    assert blas
    assert {"internal_api", "version", "num_threads", "architecture", "prefix", "filepath"} <= set(blas[0])
    assert report["numba"]["num_threads"] >= 1
    cache = report["numba_cache"]
    assert cache["total"] == len(KERNEL_MODULES) * len(KERNEL_FUNCTIONS) == 12
    assert cache["state"] in {"warm", "partial", "cold", "disabled"}
    assert len(cache["kernels"]) == 12
    assert {state["status"] for state in cache["kernels"].values()} <= {
        "warm", "stale", "other-cpu", "missing", "disabled", "unknown"}


def test_info_compiles_nothing():
    import importlib

    dispatchers = [getattr(importlib.import_module(m), f) for m in KERNEL_MODULES for f in KERNEL_FUNCTIONS]
    before = [len(d.signatures) for d in dispatchers]
    gather_info()
    assert [len(d.signatures) for d in dispatchers] == before


@pytest.mark.slow
def test_cache_turns_warm_after_a_compile(tmp_path):
    """In a fresh cache directory: all 12 missing, then lstm.step compiled in another process is warm."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("RNNCORE_NUMBA_CACHE", None)

    def report():
        run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=120)
        return json.loads(run.stdout)["numba_cache"]

    cold = report()
    assert cold["state"] == "cold" and cold["warm"] == 0
    assert {state["status"] for state in cold["kernels"].values()} == {"missing"}
    assert all(str(tmp_path) in path for path in cold["cache_dirs"])

    compile_step = textwrap.dedent("""
        import numpy as np
        from rnncore.kernels import lstm
        B, I, H = 2, 3, 4
        z = lambda *shape: np.zeros(shape)
        lstm.step(z(B, H), z(B, H), z(B, I), z(B, H), z(B, H), z(4 * H, I), z(4 * H, H), z(4 * H), z(4 * H))
    """)
    subprocess.run([sys.executable, "-c", compile_step], env=env, cwd=ROOT, check=True, timeout=300)

    warm = report()
    assert warm["state"] == "partial" and warm["warm"] == 1
    assert warm["kernels"]["lstm.step"] == {"status": "warm", "index": warm["kernels"]["lstm.step"]["index"],
                                            "entries": 1}
    assert os.path.exists(warm["kernels"]["lstm.step"]["index"])


def test_cache_disabled():
    env = {**os.environ, "RNNCORE_NUMBA_CACHE": "0", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    assert "numba cache: disabled (RNNCORE_NUMBA_CACHE=0)" in run.stdout
    assert "RNNCORE_NUMBA_CACHE=0" in run.stdout.split("Environment")[1]
