"""Start-up clean-up after a crash: temporary files that a killed writer left behind.

The store writes through ``.tmp-*`` files (fsync, then rename), so a SIGKILL can leave one
behind but never a partial object. Other writers (``radgate ingest``) may be running, so only
temporary files older than ``max_age`` seconds are removed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from governance.settings import Settings, get_settings

__all__ = ["sweep_stale_temp_files"]


def sweep_stale_temp_files(max_age: float, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    roots = [settings.quarantine_dir]
    store = settings.resolved_object_store
    if "://" not in store or store.startswith("file://"):
        roots.append(Path(store.removeprefix("file://")))
    cutoff = time.time() - max_age
    removed = 0
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
    return removed
