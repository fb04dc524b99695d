"""Print RadGate's requirements (pyproject.toml) for an image, one per line, without some of them.

    python requirements.py pyproject.toml EXTRAS [WITHOUT...]

EXTRAS is a comma-separated list of optional-dependency groups ("" for none); WITHOUT names
distributions an image leaves out (e.g. the gateway needs neither torch nor Ray nor MLflow: none
of its code paths import them). The image installs RadGate itself with ``--no-deps`` and these
with ``-c constraints.txt``, so versions still come from the one lock. Standard library only
(it runs in the image's base Python before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str], without: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extras: {', '.join(unknown)} (known: {', '.join(sorted(optional))})")
    wanted = list(project["dependencies"]) + [r for e in extras for r in optional[e]]
    skip = {canonical(n) for n in without}
    out = []
    for requirement in wanted:
        match = _NAME.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read requirement {requirement!r}")
        if canonical(match.group(1)) not in skip and requirement not in out:
            out.append(requirement)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [e.strip() for e in argv[1].split(",") if e.strip()]
    without = {w for arg in argv[2:] for w in arg.split()}
    print("\n".join(requirements(Path(argv[0]), extras, without)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
