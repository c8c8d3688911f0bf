"""The Interop section's code block in docs/interop.md runs as written (torch and onnxruntime live)."""

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


def test_interop_snippet_runs(tmp_path, monkeypatch):
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Interop"):]
    section = section[: section.index("\n## ", 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/interop.md:Interop", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "lstm.onnx").is_file() and (tmp_path / "from_torch.safetensors").is_file()
    assert type(namespace["same"]).__name__ == "LSTM" and namespace["same"].bidirectional
