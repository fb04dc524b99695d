"""Evidence files of a version's MLflow run for the version page: the model card, evaluation
plots (calibration, confusion, ROC), the saliency gallery and the per-subgroup table."""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Evidence", "read_artifact", "run_evidence"]

_FOLDERS = ("evaluation", "explain", "explain/gallery")
_MAX_BYTES = 20 * 1024 * 1024


@dataclass
class Evidence:
    model_card: str | None = None
    plots: list[str] = field(default_factory=list)
    gallery: list[str] = field(default_factory=list)
    subgroups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files(self) -> set[str]:
        return set(self.plots) | set(self.gallery)


def _listing(client: Any, run_id: str) -> set[str]:
    from mlflow.exceptions import MlflowException

    found: set[str] = set()
    for folder in ("", *_FOLDERS):
        try:
            items = client.list_artifacts(run_id, folder or None)
        except (MlflowException, OSError):  # a missing folder or an unreadable store: nothing shown
            continue
        found |= {item.path for item in items if not item.is_dir}
    return found


def read_artifact(client: Any, run_id: str, path: str) -> bytes:
    """Bytes of one run artifact (the caller checks that ``path`` is listed)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, path, tmp))
        if local.stat().st_size > _MAX_BYTES:
            raise ValueError("artifact too large to show")
        return local.read_bytes()


def _subgroups(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for attribute, groups in sorted((report.get("subgroups") or {}).items()):
        if not isinstance(groups, dict):
            continue
        for group, metrics in sorted(groups.items()):
            if isinstance(metrics, dict):
                rows.append({"attribute": attribute, "group": group, "metrics": metrics})
    return rows


def run_evidence(client: Any, run_id: str | None) -> Evidence:
    evidence = Evidence()
    if not run_id:
        return evidence
    files = _listing(client, run_id)
    if "model_card.md" in files:
        evidence.model_card = read_artifact(client, run_id, "model_card.md").decode(errors="replace")
    if "evaluation/evaluation.json" in files:
        with contextlib.suppress(ValueError):
            evidence.subgroups = _subgroups(
                json.loads(read_artifact(client, run_id, "evaluation/evaluation.json"))
            )
    pngs = sorted(f for f in files if f.endswith(".png"))
    evidence.gallery = [f for f in pngs if f.startswith("explain/gallery/")]
    evidence.plots = [f for f in pngs if f not in evidence.gallery]
    return evidence
