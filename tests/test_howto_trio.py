"""The code blocks of docs/howto/trio.rst run as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "howto" / "trio.rst"
BLOCKS = re.findall(
    r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", PAGE.read_text(encoding="utf-8")
)


def test_the_page_has_code_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_code_block_runs(number):
    code = textwrap.dedent(BLOCKS[number])
    exec(compile(code, f"{PAGE.name}[{number}]", "exec"), {"__name__": "howto"})  # noqa: S102 - our own docs
