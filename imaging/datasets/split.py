"""Deterministic group-level splits: no patient (or study) in two splits, stratified by label."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["assign_splits"]


def _allocate(count: int, fractions: Mapping[str, float]) -> list[str]:
    """Largest-remainder allocation of ``count`` slots to splits, in a fixed order."""
    names = list(fractions)
    exact = {n: count * fractions[n] for n in names}
    sizes = {n: int(exact[n]) for n in names}
    for n in sorted(names, key=lambda n: (-(exact[n] - sizes[n]), names.index(n))):
        if sum(sizes.values()) >= count:
            break
        sizes[n] += 1
    return [n for n in names for _ in range(sizes[n])]


def assign_splits(
    group_labels: Mapping[str, int], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Group id -> split name.

    Groups are stratified by their (max) label, ordered by a seeded hash (stable whatever the
    input order) and allotted to splits by largest remainder, so small datasets still get
    every class into every split they can.
    """
    by_label: dict[int, list[str]] = {}
    for group, label in group_labels.items():
        by_label.setdefault(label, []).append(group)
    out: dict[str, str] = {}
    for label in sorted(by_label):
        groups = sorted(by_label[label], key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        for group, split in zip(groups, _allocate(len(groups), fractions), strict=True):
            out[group] = split
    return out
