"""Synthetic subjects for segmentation training tests: two ellipsoids in noise, as NIfTI rows.

Each row has the shape :func:`imaging.volumes.materialize_segmentation` returns (image and
label NIfTI paths, arrays in ``(Z, Y, X)`` order with the affine on those indices), so the
training path is exercised exactly as on real series, only smaller and faster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STRUCTURES = {1: "left blob", 2: "right blob"}


def make_subject(seed: int, shape: tuple[int, int, int] = (20, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) of one subject: two ellipsoids of random size, place, contrast."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    label = np.zeros(shape, np.uint8)
    image = rng.normal(100.0, 15.0, shape)
    for value, side in ((1, 0.3), (2, 0.7)):
        centre = np.array(shape) * np.array([0.5, 0.5, side]) + rng.normal(0, 1.5, 3)
        radius = rng.uniform(0.55, 0.85, 3) * np.array([4.0, 5.0, 5.0])
        inside = ((z - centre[0]) / radius[0]) ** 2 + ((y - centre[1]) / radius[1]) ** 2
        inside = inside + ((x - centre[2]) / radius[2]) ** 2 <= 1
        label[inside] = value
        image[inside] += rng.uniform(60, 120) * (1 if value == 1 else -0.6)
    return image.astype(np.float32), label


def write_rows(
    directory: Path, count: int, *, first_seed: int = 0, split: str = "train",
    spacing: tuple[float, float, float] = (3.0, 2.0, 2.0),
) -> list[dict[str, Any]]:  # fmt: skip
    """``count`` subjects as NIfTI files under ``directory``; rows as materialize_segmentation gives."""
    import nibabel as nib

    directory.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    rows = []
    for index in range(count):
        seed = first_seed + index
        image, label = make_subject(seed)
        image_path, label_path = directory / f"s{seed}-image.nii.gz", directory / f"s{seed}-label.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(image_path))
        nib.save(nib.Nifti1Image(label, affine), str(label_path))
        rows.append(
            {"image": str(image_path), "label": str(label_path), "split": split, "patient": f"P{seed:03d}",
             "series_uid": f"2.25.{seed + 1}", "subgroups": {"site": "A" if seed % 2 else "B"}}
        )  # fmt: skip
    return rows
