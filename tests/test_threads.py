"""set_num_threads limits the BLAS the kernels use, and results do not depend on it."""

import subprocess
import sys

import numpy as np
import pytest

import rnncore


def test_set_num_threads_limits_blas_and_keeps_results():
    before = rnncore.num_threads()
    m = rnncore.LSTM(8, 16, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((7, 5, 8))
    reference, _ = m(x)
    try:
        rnncore.set_num_threads(1)
        assert set(rnncore.num_threads().values()) == {1}
        out, _ = m(x)
        np.testing.assert_allclose(out, reference, rtol=1e-13)
    finally:
        from threadpoolctl import threadpool_limits

        for name, n in before.items():
            threadpool_limits(limits=n, user_api="blas")
    assert rnncore.num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        rnncore.set_num_threads(bad)


def test_environment_variable_applies_at_import():
    code = "import rnncore; print(sorted(set(rnncore.num_threads().values())))"
    out = subprocess.run([sys.executable, "-c", code], env={"RNNCORE_NUM_THREADS": "1", "PATH": ""},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1]"
