"""The dataset quality and bias report: balance, subgroups, duplicates, acquisition, pixels.

``build_report(version)`` reads every image of a dataset version from the store once and
returns a :class:`DatasetReport` (``to_dict()`` is the JSON). Warnings carry the threshold
they were judged against (``configs/compliance/thresholds.yaml``). Instances are named by the
first 12 hex digits of their content hash only.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from governance.settings import Settings, get_settings
from imaging.compliance.config import QualityThresholds, load_thresholds
from imaging.datasets import DatasetVersion, ManifestItem
from imaging.quality.pixels import ImageFacts, correlation, read_facts
from imaging.store import ContentStore

__all__ = ["REPORT_SCHEMA", "SUBGROUPS", "DatasetReport", "Warning_", "build_report"]

REPORT_SCHEMA = "radgate.dataset-report/1"
#: Subgroup attributes the report and the model evaluation look at.
SUBGROUPS = ("site", "manufacturer", "sex", "age_band")
_PAIR_LIMIT = 200  # pairs listed in the report (all are counted)


@dataclass(frozen=True)
class Warning_:
    """One finding of the report, with the value that triggered it and the threshold."""

    code: str
    message: str
    value: Any = None
    threshold: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "value": self.value, "threshold": self.threshold}


@dataclass
class DatasetReport:
    """The report of one dataset version."""

    dataset: dict[str, Any]
    splits: dict[str, dict[str, Any]]
    subgroups: dict[str, dict[str, dict[str, Any]]]
    duplicates: dict[str, Any]
    acquisition: dict[str, Any]
    pixels: dict[str, Any]
    thresholds: dict[str, Any]
    warnings: list[Warning_] = field(default_factory=list)
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def status(self) -> str:
        return "warnings" if self.warnings else "passed"

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow."""
        d = self.duplicates
        return {
            "dq_instances": float(self.dataset["instances"]),
            "dq_warnings": float(len(self.warnings)),
            "dq_exact_duplicates_within_split": float(d["exact"]["within_split"]),
            "dq_exact_duplicates_across_splits": float(d["exact"]["across_splits"]),
            "dq_near_duplicates_within_split": float(d["near"]["within_split"]),
            "dq_near_duplicates_across_splits": float(d["near"]["across_splits"]),
            "dq_unreadable": float(self.pixels["unreadable"]),
            "dq_size_outliers": float(len(self.acquisition["size_outliers"])),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "generated_at": self.generated_at,
            "status": self.status,
            "dataset": self.dataset,
            "splits": self.splits,
            "subgroups": self.subgroups,
            "duplicates": self.duplicates,
            "acquisition": self.acquisition,
            "pixels": self.pixels,
            "thresholds": self.thresholds,
            "warnings": [w.to_dict() for w in self.warnings],
            "metrics": self.metrics(),
        }


def _label(version: DatasetVersion, item: ManifestItem) -> str:
    names = version.manifest.label_names
    return names[item.label] if item.label < len(names) else str(item.label)


def _splits(version: DatasetVersion, t: QualityThresholds, warn: Callable[..., None]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    by_split: dict[str, list[ManifestItem]] = defaultdict(list)
    for item in version.manifest.items:
        by_split[str(item.split)].append(item)
    names = version.manifest.label_names
    for split in ("train", "val", "test"):
        items = by_split.get(split, [])
        counts = Counter(_label(version, i) for i in items)
        total = len(items)
        fractions = {n: (counts.get(n, 0) / total if total else 0.0) for n in names}
        out[split] = {
            "instances": total,
            "patients": len({i.patient for i in items}),
            "labels": {n: counts.get(n, 0) for n in names},
            "label_fractions": {n: round(f, 4) for n, f in fractions.items()},
        }
        if total == 0:
            warn("empty-split", f"split {split} has no instances", 0, ">0")
            continue
        smallest = min(fractions, key=lambda n: fractions[n])
        if fractions[smallest] < t.min_label_fraction:
            warn(
                "label-imbalance",
                f"class {smallest} is {fractions[smallest]:.0%} of split {split}",
                round(fractions[smallest], 4),
                t.min_label_fraction,
            )
    patients_in: dict[str, set[str]] = defaultdict(set)
    for item in version.manifest.items:
        patients_in[item.patient].add(str(item.split))
    leaked = sum(1 for s in patients_in.values() if len(s) > 1)
    if leaked:
        warn("patient-in-several-splits", f"{leaked} patient(s) appear in more than one split", leaked, 0)
    return out


def _subgroups(version: DatasetVersion, t: QualityThresholds, warn: Callable[..., None]) -> dict[str, Any]:
    items = version.manifest.items
    names = version.manifest.label_names
    positive = len(names) - 1  # binary: index 1; multi-class: the last class as "positive rate"
    split_total = Counter(str(i.split) for i in items)
    out: dict[str, dict[str, Any]] = {}
    for attribute in SUBGROUPS:
        groups: dict[str, list[ManifestItem]] = defaultdict(list)
        for item in items:
            groups[item.attributes.get(attribute, "unknown")].append(item)
        table: dict[str, Any] = {}
        for value, members in sorted(groups.items()):
            labels = Counter(_label(version, i) for i in members)
            splits = Counter(str(i.split) for i in members)
            table[value] = {
                "instances": len(members),
                "patients": len({i.patient for i in members}),
                "share": round(len(members) / len(items), 4) if items else 0.0,
                "labels": {n: labels.get(n, 0) for n in names},
                "positive_rate": round(sum(1 for i in members if i.label == positive) / len(members), 4),
                "splits": {s: splits.get(s, 0) for s in ("train", "val", "test")},
            }
            if len(members) < t.min_subgroup_count:
                warn(
                    "small-subgroup",
                    f"{attribute}={value} has {len(members)} instance(s)",
                    len(members),
                    t.min_subgroup_count,
                )
            # Too small a group is already warned about; its split shares are noise.
            for split, n_split in split_total.items() if len(members) >= t.min_subgroup_count else ():
                overall = len(members) / len(items)
                in_split = splits.get(split, 0) / n_split
                if abs(in_split - overall) > t.max_split_subgroup_shift:
                    warn(
                        "subgroup-split-shift",
                        f"{attribute}={value} is {in_split:.0%} of split {split} vs {overall:.0%} overall",
                        round(in_split - overall, 4),
                        t.max_split_subgroup_shift,
                    )
        rates = [g["positive_rate"] for g in table.values() if g["instances"] >= max(t.min_subgroup_count, 1)]
        if len(rates) > 1 and max(rates) - min(rates) > t.max_subgroup_prevalence_gap:
            warn(
                "subgroup-prevalence-gap",
                f"positive rate by {attribute} ranges {min(rates):.0%}-{max(rates):.0%}",
                round(max(rates) - min(rates), 4),
                t.max_subgroup_prevalence_gap,
            )
        out[attribute] = table
    return out


def _pairs(
    version: DatasetVersion, facts: dict[str, ImageFacts], t: QualityThresholds, warn: Callable[..., None]
) -> dict[str, Any]:
    items = [i for i in version.manifest.items if facts[i.sha256].pixel_sha256]
    exact: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    counts = {"exact": Counter[str](), "near": Counter[str]()}
    hashed = [i for i in items if facts[i.sha256].phash]
    bits = np.array([int(str(facts[i.sha256].phash), 16) for i in hashed], dtype=np.uint64)
    exact_pairs: set[tuple[int, int]] = set()
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(hashed):
        by_pixels[str(facts[item.sha256].pixel_sha256)].append(index)
    for group in by_pixels.values():
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                exact_pairs.add((group[a], group[b]))

    def entry(a: int, b: int, kind: str, distance: int) -> None:
        ia, ib = hashed[a], hashed[b]
        where = "within_split" if ia.split == ib.split else "across_splits"
        counts[kind][where] += 1
        target = exact if kind == "exact" else near
        if len(target) < _PAIR_LIMIT:
            target.append(
                {
                    "a": ia.sha256[:12],
                    "b": ib.sha256[:12],
                    "split_a": str(ia.split),
                    "split_b": str(ib.split),
                    "same_patient": ia.patient == ib.patient,
                    "label_a": _label(version, ia),
                    "label_b": _label(version, ib),
                    "distance": distance,
                }
            )

    for a, b in sorted(exact_pairs):
        entry(a, b, "exact", 0)
    for a in range(len(hashed) - 1):
        distances = np.bitwise_count(bits[a + 1 :] ^ bits[a])
        for offset in np.nonzero(distances <= t.near_duplicate_distance)[0]:
            b = a + 1 + int(offset)
            if (a, b) in exact_pairs:
                continue
            ta, tb = facts[hashed[a].sha256].thumbnail, facts[hashed[b].sha256].thumbnail
            # Radiographs of one body part look alike to a 64-bit hash: the pixels must agree too.
            if ta is not None and tb is not None and correlation(ta, tb) >= t.near_duplicate_min_correlation:
                entry(a, b, "near", int(distances[offset]))
    within = counts["exact"]["within_split"] + counts["near"]["within_split"]
    across = counts["exact"]["across_splits"] + counts["near"]["across_splits"]
    if within > t.max_duplicates_within_split:
        warn(
            "duplicates-within-split",
            f"{within} duplicate pair(s) within a split",
            within,
            t.max_duplicates_within_split,
        )
    if across > t.max_duplicates_across_splits:
        warn(
            "duplicates-across-splits",
            f"{across} duplicate pair(s) across splits (leakage)",
            across,
            t.max_duplicates_across_splits,
        )
    conflicting = sum(1 for p in exact + near if p["label_a"] != p["label_b"])
    if conflicting:
        warn(
            "duplicates-with-different-labels",
            f"{conflicting} duplicate pair(s) disagree on the label",
            conflicting,
            0,
        )
    return {
        "method": "exact: sha256 of decoded pixels; near: 64-bit pHash (imagehash) within the distance, "
        "confirmed by the correlation of 128x128 thumbnails",
        "near_duplicate_min_correlation": t.near_duplicate_min_correlation,
        "near_duplicate_distance": t.near_duplicate_distance,
        "exact": {
            "within_split": counts["exact"]["within_split"],
            "across_splits": counts["exact"]["across_splits"],
            "pairs": exact,
        },
        "near": {
            "within_split": counts["near"]["within_split"],
            "across_splits": counts["near"]["across_splits"],
            "pairs": near,
        },
    }


def _acquisition(
    facts: dict[str, ImageFacts], t: QualityThresholds, warn: Callable[..., None]
) -> dict[str, Any]:
    parsed = [f for f in facts.values() if f.error not in {"missing-object", "hash-mismatch", "unparseable"}]
    values: dict[str, dict[str, int]] = {}
    for attribute in ("modality", "photometric", "bits_allocated", "bits_stored", "pixel_spacing"):
        values[attribute] = dict(Counter(str(getattr(f, attribute)) for f in parsed).most_common())
    values["size"] = dict(Counter(f"{f.rows}x{f.columns}" for f in parsed).most_common())
    for attribute in t.consistent_attributes:
        if attribute in values and len(values[attribute]) > 1:
            warn(
                "inconsistent-acquisition",
                f"{len(values[attribute])} different {attribute} values",
                values[attribute],
                "1 value",
            )
    outliers: list[dict[str, Any]] = []
    sized = [f for f in parsed if f.rows and f.columns]
    for dimension in ("rows", "columns"):
        numbers = [getattr(f, dimension) for f in sized]
        if len(numbers) < 3:
            continue
        median = statistics.median(numbers)
        mad = statistics.median(abs(n - median) for n in numbers) or max(median * 0.01, 1.0)
        for f in sized:
            score = abs(getattr(f, dimension) - median) / mad
            if score > t.size_outlier_mads:
                outliers.append(
                    {
                        "sha256": f.sha256[:12],
                        "dimension": dimension,
                        "value": getattr(f, dimension),
                        "median": median,
                        "mads": round(score, 1),
                    }
                )
    if outliers:
        warn("size-outliers", f"{len(outliers)} image size outlier(s)", len(outliers), t.size_outlier_mads)
    values["size_outliers"] = outliers  # type: ignore[assignment]
    return values


def build_report(
    version: DatasetVersion,
    *,
    thresholds: QualityThresholds | None = None,
    settings: Settings | None = None,
) -> DatasetReport:
    """Read every image of ``version`` and judge it against ``thresholds`` (default: the config)."""
    settings = settings or get_settings()
    t = thresholds or load_thresholds().quality
    store = ContentStore.from_settings(settings)
    warnings: list[Warning_] = []

    def warn(code: str, message: str, value: Any = None, threshold: Any = None) -> None:
        warnings.append(Warning_(code, message, value, threshold))

    manifest = version.manifest
    from imaging.compliance.erasure import superseded_by

    successor = superseded_by(version.id)
    if successor is not None:
        warn(
            "superseded",
            f"version superseded by {successor[:12] or 'nothing'} (patient erasure): do not train on it",
            successor or None,
            "current",
        )
    facts = {i.sha256: read_facts(store, i.sha256, i.store_key) for i in manifest.items}
    unreadable = [{"sha256": f.sha256[:12], "reason": f.error} for f in facts.values() if f.error]
    if len(unreadable) > t.max_unreadable:
        warn(
            "unreadable-pixels",
            f"{len(unreadable)} instance(s) without usable pixel data",
            len(unreadable),
            t.max_unreadable,
        )
    return DatasetReport(
        dataset={
            "name": version.name,
            "id": version.id,
            "created_at": version.created_at.isoformat(),
            "instances": len(manifest.items),
            "patients": len({i.patient for i in manifest.items}),
            "studies": len({i.study for i in manifest.items}),
            "label_names": manifest.label_names,
            "split_fractions": manifest.split,
            "group_by": str(manifest.group_by),
            "profiles": manifest.profiles,
            "superseded_by": successor,
        },
        splits=_splits(version, t, warn),
        subgroups=_subgroups(version, t, warn),
        duplicates=_pairs(version, facts, t, warn),
        acquisition=_acquisition(facts, t, warn),
        pixels={
            "unreadable": len(unreadable),
            "instances": unreadable[:_PAIR_LIMIT],
            "reasons": dict(Counter(str(u["reason"]) for u in unreadable)),
        },
        thresholds=t.model_dump(mode="json"),
        warnings=warnings,
    )
