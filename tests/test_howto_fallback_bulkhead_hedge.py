"""The code blocks of docs/howto/fallback-bulkhead-hedge.rst run as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "howto" / "fallback-bulkhead-hedge.rst"


def blocks():
    text = PAGE.read_text()
    found = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text)
    return [textwrap.dedent(block) for block in found]


def test_the_page_has_its_examples():
    assert len(blocks()) >= 6


@pytest.mark.parametrize("index", range(6))
def test_each_example_runs(index):
    exec(compile(blocks()[index], f"{PAGE.name}[{index}]", "exec"), {})  # noqa: S102 - our own docs
