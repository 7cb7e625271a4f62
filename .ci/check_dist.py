"""Check what the built distributions hold: the package and its licence, no junk.

Usage: python .ci/check_dist.py DIST_DIR
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

ALLOWED_IN_WHEEL = re.compile(
    r"^(fluxus/([a-z_]+/)*[a-z_]+\.py|fluxus/py\.typed"
    r"|fluxus-[^/]+\.dist-info/(METADATA|WHEEL|RECORD|entry_points\.txt|licenses/LICENSE))$"
)
JUNK = re.compile(r"(__pycache__|\.pyc$|\.so$|/\.|_build/|\.venv|\.egg-info)")


def main(dist: Path) -> int:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    problems = []
    with zipfile.ZipFile(wheel) as zipped:
        names = zipped.namelist()
    problems += [f"wheel holds {name}" for name in names if not ALLOWED_IN_WHEEL.match(name)]
    if not any(name.endswith("licenses/LICENSE") for name in names):
        problems.append("wheel lacks LICENSE")
    with tarfile.open(sdist) as tarred:
        members = [member.name.split("/", 1)[-1] for member in tarred.getmembers()]
    problems += [f"sdist holds {name}" for name in members if JUNK.search(name)]
    if "LICENSE" not in members:
        problems.append("sdist lacks LICENSE")
    for problem in problems:
        print(problem)
    print(f"{wheel.name}: {len(names)} files; {sdist.name}: {len(members)} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
