"""Print RadGate's requirements (pyproject.toml) for an image, one per line, without some of them.

    python requirements.py pyproject.toml EXTRAS [WITHOUT...] [--no-deps-to FILE]

EXTRAS is a comma-separated list of optional-dependency groups ("" for none); WITHOUT names
distributions an image leaves out (e.g. the gateway needs neither torch nor Ray nor MLflow: none
of its code paths import them). The image installs RadGate itself with ``--no-deps`` and these
with ``-c constraints.txt``, so versions still come from the one lock.

Images take OpenCV's headless build (``opencv-python-headless``, the same cv2 release without
its GUI: no Qt, FFmpeg or libGL, 130 MB less) instead of ``opencv-python``. RapidOCR names the
GUI build among its requirements, so it is written to the ``--no-deps-to`` file, to be installed
with ``pip install --no-deps`` after the rest; pyproject.toml declares its other requirements,
so nothing it needs is missing. Standard library only (it runs in the image's base Python
before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# The GUI build of a distribution -> its headless build (same module, same release numbers).
HEADLESS = {"opencv-python": "opencv-python-headless"}
# Distributions whose own requirements name a GUI build above: installed with --no-deps.
WITHOUT_DEPS = frozenset({"rapidocr-onnxruntime"})


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str], without: set[str]) -> tuple[list[str], list[str]]:
    """(requirements to install with their dependencies, those to install with --no-deps)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extras: {', '.join(unknown)} (known: {', '.join(sorted(optional))})")
    wanted = list(project["dependencies"]) + [r for e in extras for r in optional[e]]
    skip = {canonical(n) for n in without}
    out: list[str] = []
    no_deps: list[str] = []
    for requirement in wanted:
        match = _NAME.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read requirement {requirement!r}")
        name = canonical(match.group(1))
        if name in skip:
            continue
        if name in HEADLESS:
            requirement = HEADLESS[name] + requirement[match.end() :]
        target = no_deps if name in WITHOUT_DEPS else out
        if requirement not in target:
            target.append(requirement)
    return out, no_deps


def main(argv: list[str]) -> int:
    no_deps_file: Path | None = None
    if "--no-deps-to" in argv:
        at = argv.index("--no-deps-to")
        if at + 1 >= len(argv):
            print("--no-deps-to needs a file name", file=sys.stderr)
            return 2
        no_deps_file = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [e.strip() for e in argv[1].split(",") if e.strip()]
    without = {w for arg in argv[2:] for w in arg.split()}
    out, no_deps = requirements(Path(argv[0]), extras, without)
    if no_deps and no_deps_file is None:
        named = ", ".join(no_deps)
        print(f"{named} must be installed with --no-deps: pass --no-deps-to FILE", file=sys.stderr)
        return 2
    if no_deps_file is not None:
        no_deps_file.write_text("".join(f"{r}\n" for r in no_deps))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
