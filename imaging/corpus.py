"""Real DICOM files shipped by installed packages (pydicom, pydicom-data, deid-data, pynetdicom).

Used by the tests and the benchmark as a realistic, varied corpus that needs no download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["packaged_dicom_files"]

_PACKAGES = {
    "pydicom": "data/test_files",
    "data_store": "data",  # pydicom-data
    "deid_data": "data",
    "pynetdicom": "tests/dicom_files",
}


def packaged_dicom_files() -> list[Path]:
    """Every regular file under the packages' DICOM data folders (some deliberately broken)."""
    found: list[Path] = []
    for package, sub in _PACKAGES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))) / sub
        if root.is_dir():
            found.extend(
                p
                for p in sorted(root.rglob("*"))
                if p.is_file() and p.suffix not in {".py", ".pyc", ".json", ".txt", ".md"}
            )
    return found
