"""The README's Python blocks run as written, in order, in one namespace (a fresh folder).

A block that needs something a test cannot provide says so in its first lines with a
`# needs: unidb serve` comment; exactly those blocks are skipped, each reported with its
reason. Bash blocks are not run.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"^# needs: (.+)$", re.M)
# What a marked block may need, and why the test cannot give it.
SKIPPABLE = {"unidb serve": "needs a running `unidb serve` and an API key"}


def _blocks() -> list[tuple[int, str, str | None]]:
    """(line number, code, what it needs or None) for every ```python block, in order."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start(1)) + 1
        code = m.group(1)
        need = NEEDS.search(code)
        out.append((line, code, need.group(1).split("(")[0].strip() if need else None))
    return out


def test_readme_has_python_blocks_and_only_known_skip_markers():
    blocks = _blocks()
    assert len(blocks) >= 4, "README.md lost its Python tour?"
    for line, _, need in blocks:
        assert need is None or need in SKIPPABLE, \
            f"README.md line {line}: unknown '# needs: {need}' (known: {sorted(SKIPPABLE)})"


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for line, code, need in _blocks():
        if need is not None:
            continue                      # reported by test_readme_marked_block_is_skipped
        exec(compile(code, f"README.md (block at line {line})", "exec"), namespace)
        ran += 1
    assert ran >= 3
    for value in list(namespace.values()):  # leave no writer behind in this process
        if hasattr(value, "close") and type(value).__name__ == "Database":
            value.close()


@pytest.mark.parametrize("line,need", [(line, need) for line, _, need in _blocks()
                                       if need is not None])
def test_readme_marked_block_is_skipped(line, need):
    pytest.skip(f"README.md block at line {line} {SKIPPABLE[need]} (marked '# needs: {need}')")
