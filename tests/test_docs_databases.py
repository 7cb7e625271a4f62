"""The runnable code blocks of docs/howto/databases.rst run as written.

Blocks marked ``:class: configuration`` need a Django project and are only
compiled.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "howto" / "databases.rst"


def blocks() -> list[tuple[bool, str]]:
    found = []
    lines = PAGE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        body, configuration = [], False
        for following in lines[index + 1 :]:
            if following.strip().startswith(":class:"):
                configuration = "configuration" in following
                continue
            if following and not following.startswith("   "):
                break
            body.append(following[3:])
        found.append((configuration, "\n".join(body).strip() + "\n"))
    return found


def test_the_page_has_runnable_and_configuration_blocks() -> None:
    kinds = [configuration for configuration, _ in blocks()]
    assert False in kinds
    assert True in kinds


@pytest.mark.parametrize("number", range(len(blocks())))
def test_each_block(number: int, tmp_path: Path) -> None:
    configuration, code = blocks()[number]
    # "..." stands for the project's own entries in configuration blocks.
    compile(re.sub(r"\[\.\.\., ", "[", code), str(PAGE), "exec")
    if configuration:
        return
    script = tmp_path / "block.py"
    script.write_text(code)
    subprocess.run([sys.executable, "-W", "error", str(script)], check=True, timeout=60)
