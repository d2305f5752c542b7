"""Headless Chromium for the tests that render pages offline: the browser, its flags, a parser of
the resources a page references, and the rule for when it is missing (skip, or fail in CI)."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No network, no profile state, no background services: the report must render from the file alone.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--virtual-time-budget=5000"]


def require_chromium() -> None:
    """Skip the calling test when Chromium is missing, with the reason; fail instead where
    MRSR_REQUIRE_CHROMIUM=1 (.ci/run, which installs it): there a skip would hide a broken rendering."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} missing: run `bash scripts/setup.sh test` (installs Debian's chromium as root)"
    if os.environ.get("MRSR_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"MRSR_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


class Links(HTMLParser):
    """Every resource reference: src of any element, href of <link>, and url(...) in styles."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name in ("src", "srcset", "poster", "data") or (tag == "link" and name == "href")):
                self.resources.append(value)
            if value and name == "style":
                self.resources += re.findall(r"url\(([^)]*)\)", value)

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.resources += re.findall(r"url\(([^)]*)\)", data)
