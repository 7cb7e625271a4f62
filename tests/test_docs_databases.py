"""docs/howto/databases.rst has runnable and configuration blocks.

Its blocks run in tests/test_docs.py, like every page's: the runnable ones
run, those marked ``:class: configuration`` (they need a Django project) are
only compiled. This file checks the page keeps both kinds.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "howto" / "databases.rst"


def blocks() -> list[bool]:
    """Whether each Python block of the page is a configuration block."""
    found = []
    lines = PAGE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        configuration = False
        for following in lines[index + 1 :]:
            if not following.strip().startswith(":"):
                break
            configuration = configuration or (
                following.strip().startswith(":class:") and "configuration" in following
            )
        found.append(configuration)
    return found


def test_the_page_has_runnable_and_configuration_blocks() -> None:
    kinds = blocks()
    assert False in kinds
    assert True in kinds
