"""Run the Python blocks of one reStructuredText page, as a reader would.

``python tests/_docs_runner.py PAGE`` runs the page's ``code-block:: python``
blocks in order in one namespace (a page may build on its earlier blocks);
a block after a ``.. skip: next`` comment is left out;
``--fresh`` runs each block alone in a new interpreter instead, the promise
the README makes. Warnings are errors. On failure the page, the line of the
block and the traceback are printed and the exit status is 1.

A block marked ``:class: configuration`` (a Django settings excerpt, say,
that needs a project around it) is compiled, not run; its ``[..., `` stands
for the project's own entries.
"""

from __future__ import annotations

import re
import subprocess
import sys
import traceback
import types
import warnings
from pathlib import Path

from sybil import Example, Sybil
from sybil.parsers.rest import PythonCodeBlockParser, SkipParser


def _examples(page: Path, *, as_main: bool = False) -> list[Example]:
    # ``.. skip: next`` before a block leaves it out (configuration that
    # needs a project around it, shown but not run).
    document = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()]).parse(page)
    if as_main:
        # The page runs like a script: its namespace is the module __main__,
        # so Flask's Flask(__name__) and Django's ROOT_URLCONF=__name__ work.
        module = types.ModuleType("__main__")
        module.__file__ = str(page)
        sys.modules["__main__"] = module
        document.namespace = module.__dict__
    return list(document)


def is_configuration(example: Example) -> bool:
    """Whether *example* is marked ``:class: configuration`` (compile only)."""
    options = example.region.lexemes.get("options") or {}
    return "configuration" in str(options.get("class", "")).split()


def compile_only(example: Example, page: Path) -> None:
    """Compile a configuration block; ``[..., `` stands for the project's entries."""
    compile(re.sub(r"\[\.\.\., ", "[", example.parsed), str(page), "exec")


def run_together(page: Path) -> int:
    """Run every block of *page* in one namespace, in order."""
    warnings.simplefilter("error")
    for example in _examples(page, as_main=True):
        try:
            if is_configuration(example):
                compile_only(example, page)
            else:
                example.evaluate()
        except BaseException:  # report whatever the block raised
            print(f"{page}:{example.line}: this block failed:", file=sys.stderr)  # noqa: T201
            traceback.print_exc()
            return 1
    return 0


def run_fresh(page: Path) -> int:
    """Run each block of *page* alone, in a new interpreter."""
    skip = False
    for example in _examples(page):
        code = example.parsed
        if not isinstance(code, str):  # a ``.. skip: next``
            skip = True
            continue
        if skip:
            skip = False
            continue
        if is_configuration(example):
            try:
                compile_only(example, page)
            except SyntaxError:
                where = f"{page}:{example.line}"
                print(f"{where}: this block does not compile:", file=sys.stderr)  # noqa: T201
                traceback.print_exc()
                return 1
            continue
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            print(f"{page}:{example.line}: this block failed alone:", file=sys.stderr)  # noqa: T201
            print(done.stdout, done.stderr, file=sys.stderr)  # noqa: T201
            return 1
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    sys.exit(run_fresh(target) if "--fresh" in sys.argv else run_together(target))
