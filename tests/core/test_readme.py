"""The README's runnable example runs as written and dampens something."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def runnable_blocks() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if "torch.manual_seed" in b]


def test_readme_example_runs():
    blocks = runnable_blocks()
    assert blocks, "the README lost its runnable example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    printed = out.getvalue()
    assert "SSD dampening" in printed and "total" in printed
    total = re.search(r"total\s+([\d,]+)", printed)
    assert total and int(total.group(1).replace(",", "")) > 0
