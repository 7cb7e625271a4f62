"""docs/howto/fallback-bulkhead-hedge.rst keeps its examples.

Its blocks run in tests/test_docs.py, like every page's; this file checks
only that the page still has them.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "howto" / "fallback-bulkhead-hedge.rst"


def test_the_page_has_its_examples():
    assert PAGE.read_text(encoding="utf-8").count(".. code-block:: python") >= 6
