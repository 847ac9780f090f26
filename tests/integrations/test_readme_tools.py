"""The README's "Using ssd_fast from other tools" snippets run as written and do what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using ssd_fast from other tools"


def _blocks() -> dict[str, str]:
    """Each python block of the section, keyed by the ### heading above it."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else None]
    out = {}
    for part in re.split(r"\n### ", section)[1:]:
        heading = part.splitlines()[0].strip()
        blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
        if blocks:
            out[heading] = "\n".join(blocks)
    return out


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_the_section_has_its_snippets():
    assert {"Lightning Fabric", "Lightning", "SUPREME"} <= set(_blocks())


def test_fabric_snippet():
    pytest.importorskip("lightning")
    printed = _run(_blocks()["Lightning Fabric"])
    assert "['0.weight', '0.bias']" in printed
    assert int(re.search(r"(\d+) parameters dampened", printed).group(1)) > 0


def test_lightning_snippet():
    pytest.importorskip("lightning")
    printed = _run(_blocks()["Lightning"])
    assert int(re.search(r"(\d+) parameters dampened", printed).group(1)) > 0


def test_supreme_snippet():
    pytest.importorskip("supreme")
    from supreme import registry

    saved = dict(registry._callable_overrides["unlearning_method"])
    try:
        printed = _run(_blocks()["SUPREME"])
    finally:
        registry._callable_overrides["unlearning_method"].clear()
        registry._callable_overrides["unlearning_method"].update(saved)
    assert "('ssd_fast.integrations.supreme', 'ssd_det')" in printed
