"""docs/limits.md's table of guarantees names, for each, a test that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_guarantee_names_a_test_that_exists():
    text = (ROOT / "docs/limits.md").read_text(encoding="utf-8")
    section = text.split("## Guarantees and the tests that hold them")[1]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", section)
    assert len(named) >= 20
    for file, test in named:
        assert re.search(rf"^def {test}\(", (ROOT / file).read_text(encoding="utf-8"), re.M), f"{file}::{test}"
