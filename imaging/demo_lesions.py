"""Synthetic brain MR studies from real anatomy, half with an inserted lesion: the demo's
classification task.

Source: Debian ``mricron-data`` (``/usr/share/mricron/templates``): the ``ch2`` T1 head and its
brain-extracted ``ch2bet`` on a 1 mm grid. Each synthetic study is one axial slice of that head
(a random level through the lateral ventricles and basal ganglia), warped by a seeded random
elastic + affine deformation (MONAI, as the segmentation demo warps its subjects), given a
scanner-like intensity (bias field, contrast, gain, noise), and written as a one-image MR study
with the identifiers a real export carries (several sites, scanners, sexes and age bands).

About half the studies carry a finding: a lesion of random size, elongation, orientation,
irregular outline, contrast and position, always inside the brain. The site keeps, keyed by the
ORIGINAL accession number, ``labels.csv`` (``accession_number,label``: 0 no finding, 1 lesion) and,
for each positive study, the lesion mask as a PNG in the image's pixel grid (``masks/<accession>.png``),
never in the DICOM. Explanations are checked against those masks (pointing game).

All names, identifiers and addresses are invented; the output is deterministic for a seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imaging.demo_data import _FAMILY, _GIVEN_F, _GIVEN_M, _OPERATORS, _PHYSICIANS, _SITES, _uid
from imaging.volumes.anatomy import _SCANNERS, TEMPLATES_DIR, _Scanner, _template
from imaging.volumes.geometry import VolumeError
from imaging.volumes.volume import Volume
from imaging.volumes.writer import MR_IMAGE_STORAGE, series_datasets

__all__ = [
    "LESION_LABEL_NAMES",
    "LesionSet",
    "LesionStudy",
    "read_lesion_set",
    "read_mask",
    "write_lesion_studies",
]

#: Label values used in the CSV: 0 = no finding, 1 = lesion present.
LESION_LABEL_NAMES = ("no_finding", "lesion")
#: Age bands (decades) the studies cycle through, so that every band the evaluation compares
#: has cases in every split (subgroup gaps need at least ``min_subgroup_size`` per group).
_AGE_BANDS = (30, 40, 50, 60, 70)
_PIXEL_MM = 1.75  # 128 pixels over a 224 mm field of view


@dataclass(frozen=True)
class LesionStudy:
    """What was written for one study (originals: for tests and the demo only, never logged)."""

    path: Path
    accession_number: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    label: int
    mask_path: Path | None
    lesion_pixels: int
    sex: str
    age: int
    site: str
    manufacturer: str


@dataclass
class LesionSet:
    """The written files, ``labels.csv`` and the lesion masks (the site's, not the gateway's)."""

    root: Path
    labels_csv: Path
    studies: list[LesionStudy] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [s.path for s in self.studies]

    @property
    def dicom_dir(self) -> Path:
        return self.root / "dicom"

    @property
    def masks(self) -> dict[str, Path]:
        """Original accession number -> lesion mask PNG (positive studies only)."""
        return {s.accession_number: s.mask_path for s in self.studies if s.mask_path is not None}

    @property
    def prevalence(self) -> float:
        return sum(s.label for s in self.studies) / max(len(self.studies), 1)


def read_mask(path: Path) -> np.ndarray:
    """A lesion mask PNG as a boolean (rows, columns) array in the image's pixel grid."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def _load_head() -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """ch2 T1 and its brain mask as RAS (X, Y, Z) float arrays, and the axial levels to sample
    (the brain's middle third: ventricles, basal ganglia, centrum semiovale)."""
    import nibabel as nib

    paths = [TEMPLATES_DIR / "ch2.nii.gz", TEMPLATES_DIR / "ch2bet.nii.gz"]
    if not all(p.exists() for p in paths):
        raise VolumeError(
            f"the anatomy templates are missing from {TEMPLATES_DIR}: install the Debian package "
            "mricron-data (scripts/ci/install-apt.sh)"
        )
    t1, bet = (
        np.asarray(nib.as_closest_canonical(nib.load(str(p))).dataobj, dtype=np.float32) for p in paths
    )
    brain = bet > 0
    levels = np.flatnonzero(brain.any(axis=(0, 1)))
    low, high = int(levels.min()), int(levels.max())
    span = high - low
    return (
        t1 / max(float(t1.max()), 1.0),
        brain.astype(np.float32),
        (low + span * 2 // 5, low + span * 7 // 10),
    )


def _axial_square(array: np.ndarray) -> np.ndarray:
    """RAS (X, Y) slice -> (rows anterior to posterior, columns right to left: LPS display),
    zero-padded to a square."""
    image = np.ascontiguousarray(array.T[::-1, ::-1])
    size = max(image.shape)
    out = np.zeros((size, size), dtype=np.float32)
    r0, c0 = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    out[r0 : r0 + image.shape[0], c0 : c0 + image.shape[1]] = image
    return out


def _warped_slice(
    t1: np.ndarray, brain: np.ndarray, level: int, seed: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One subject's slice and brain mask: random elastic + affine warp (one call for both, so
    they stay aligned), resampled to ``size`` x ``size``."""
    import torch
    from monai.transforms import Rand2DElastic, Resize

    square = torch.from_numpy(np.stack([_axial_square(t1[:, :, level]), _axial_square(brain[:, :, level])]))
    stacked = Resize((size, size), mode="area")(square)  # warp at the output size: 3x cheaper
    scale = size / 217
    warp = Rand2DElastic(
        spacing=(40 * scale, 40 * scale),
        magnitude_range=(1, 3),
        prob=1.0,
        rotate_range=(0.15,),
        scale_range=(0.08, 0.08),
        translate_range=(6 * scale, 6 * scale),
        padding_mode="zeros",
    )
    warp.set_random_state(seed)
    resized = np.asarray(warp(stacked, mode="bilinear"))
    return resized[0], resized[1] > 0.5


def _bias(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A smooth multiplicative bias field (second-order polynomial), mean about 1."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    c = rng.normal(0, strength, 5)
    return np.exp(c[0] * x + c[1] * y + c[2] * x * y + c[3] * x**2 + c[4] * y**2).astype(np.float32)


def _lesion(rng: np.random.Generator, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A soft lesion profile in [0, 1] and its mask: an irregular ellipse of radius 4-9 pixels
    (7-16 mm), elongation up to 1.8, random orientation, centred deep enough in the brain that it
    lies inside it. None when the slice has no room for one."""
    from scipy import ndimage

    radius = float(rng.uniform(4.0, 9.0))
    inside = ndimage.binary_erosion(brain, iterations=int(np.ceil(radius * 1.4)) + 1)
    candidates = np.argwhere(inside)
    if len(candidates) == 0:
        return None
    cy, cx = candidates[int(rng.integers(len(candidates)))]
    elongation = float(rng.uniform(1.0, 1.8))
    angle = float(rng.uniform(0, np.pi))
    size = brain.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = y - cy, x - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    outline = 1.0 + sum(
        rng.uniform(0, 0.15) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    distance = np.sqrt((u / (radius * np.sqrt(elongation))) ** 2 + (v * np.sqrt(elongation) / radius) ** 2)
    distance = distance / outline
    profile = 1.0 / (1.0 + np.exp((distance - 1.0) * 8.0))
    mask = (profile >= 0.5) & brain
    if not mask.any():
        return None
    return profile.astype(np.float32) * brain, mask


def _scanner_image(
    rng: np.random.Generator,
    image: np.ndarray,
    brain: np.ndarray,
    scanner: _Scanner,
    lesion: np.ndarray | None,
) -> np.ndarray:
    """Stored MR values 0..~1000: the lesion (hyperintense, 70-130% of the brain's median signal
    above its surroundings), gamma contrast, bias field, scanner gain and noise."""
    out = image.copy()
    if lesion is not None:
        median = float(np.median(out[brain])) if brain.any() else float(out.mean())
        out = out + float(rng.uniform(0.7, 1.3)) * median * lesion
    out = np.clip(out, 0, None) ** float(rng.uniform(0.8, 1.25))
    out = out * _bias(rng, out.shape[0], 0.12) * scanner.gain
    head = out > 0.02 * max(float(out.max()), 1e-6)
    out = out + rng.normal(0, scanner.noise, out.shape).astype(np.float32) * head * float(out.max())
    out = np.clip(out, 0, None)
    return np.round(out / max(float(out.max()), 1e-6) * 1000.0).astype(np.float32)


def _write_mask(mask: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _site_split(written: list[LesionStudy], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Accession -> split, as a site defines an official split. Per label, the studies are
    ordered by age band, then site, then a seeded hash, and dealt out by largest deficit (each
    study goes to the split furthest below its share so far): every run of that order, and so
    every age band and site, is split in the given proportions, for small exports too. The same
    export always gets the same split."""
    import hashlib

    names = list(fractions)
    out: dict[str, str] = {}
    for label in (0, 1):
        ordered = sorted(
            (s for s in written if s.label == label),
            key=lambda s: (
                s.age // 10,
                s.site,
                hashlib.sha256(f"{seed}:{s.accession_number}".encode()).hexdigest(),
            ),
        )
        dealt = dict.fromkeys(names, 0)
        for position, study in enumerate(ordered, start=1):
            name = max(names, key=lambda n: (fractions[n] * position - dealt[n], -names.index(n)))
            dealt[name] += 1
            out[study.accession_number] = name
    return out


def write_lesion_studies(
    out_dir: Path,
    *,
    studies: int = 240,
    seed: int = 0,
    size: int = 128,
    prevalence: float = 0.5,
    split: Mapping[str, float] | None = None,
) -> LesionSet:
    """Write ``studies`` one-image MR studies (one per patient), ``labels.csv`` and the masks.

    With ``split`` (fractions of train/val/test), ``labels.csv`` has a ``split`` column: the
    site's own split (:func:`_site_split`), which dataset creation keeps as given.

    DICOM goes to ``out_dir/dicom/<site code>/<patient id>/<accession>.dcm`` (what a PACS sends:
    ingest ``out_dir/dicom``), masks to ``out_dir/masks/<accession>.png``. Exactly
    ``round(studies * prevalence)`` studies are positive, spread over sites, sexes and age bands.
    Deterministic for a given ``seed``.
    """
    if studies < 2:
        raise ValueError("studies must be at least 2")
    if not 32 <= size <= 512:
        raise ValueError("size must be between 32 and 512 pixels")
    if not 0.0 < prevalence < 1.0:
        raise ValueError("prevalence must be between 0 and 1")
    out_dir = Path(out_dir)
    t1, brain3d, (low, high) = _load_head()
    rng = np.random.default_rng(seed)
    positives = set(rng.permutation(studies)[: round(studies * prevalence)].tolist())
    base_date = dt.date(2024, 2, 5)
    written: list[LesionStudy] = []
    for p in range(studies):
        site_index = p % len(_SITES)
        site = _SITES[site_index]
        scanner = _SCANNERS[(p // len(_SITES) + site_index) % len(_SCANNERS)]
        sex = "F" if (p // 2) % 2 == 0 else "M"
        given = str(rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M))
        age = _AGE_BANDS[(p // 3) % len(_AGE_BANDS)] + int(rng.integers(0, 10))
        date = base_date + dt.timedelta(days=int(rng.integers(0, 500)))
        birth = date - dt.timedelta(days=age * 365 + int(rng.integers(0, 365)))
        patient_id = f"{site.station_prefix}L{seed % 100:02d}{p:05d}"
        patient = {
            "name": f"{rng.choice(_FAMILY)}^{given}",
            "id": patient_id,
            "birth_date": birth.strftime("%Y%m%d"),
            "sex": sex,
            "age": str(age),
            "mrn2": f"MRN{int(rng.integers(10**6, 10**7))}",
        }
        seconds = int(rng.integers(7 * 3600, 19 * 3600))
        accession = f"L{seed % 100:02d}{p:05d}"
        study = {
            "accession": accession,
            "date": date.strftime("%Y%m%d"),
            "time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
            "referrer": str(rng.choice(_PHYSICIANS)),
            "operator": str(rng.choice(_OPERATORS)),
            "study_uid": _uid("lesion-study", seed, p),
        }
        level = int(rng.integers(low, high + 1))
        image, brain = _warped_slice(t1, brain3d, level, seed * 10_000 + p, size)
        lesion = _lesion(rng, brain) if p in positives else None
        pixels = _scanner_image(rng, image, brain, scanner, None if lesion is None else lesion[0])
        volume = Volume(
            array=pixels[None],
            spacing=(3.0, _PIXEL_MM, _PIXEL_MM),
            origin=(-size * _PIXEL_MM / 2, -size * _PIXEL_MM / 2, float(level - 90)),
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            study_instance_uid=study["study_uid"],
            series_instance_uid=_uid("lesion-series", seed, p),
            frame_of_reference_uid=_uid("lesion-frame", seed, p),
            sop_instance_uids=(_uid("lesion-sop", seed, p),),
        )
        template = _template(
            patient=patient, study=study, site_index=site_index, scanner=scanner,
            station=f"{site.station_prefix}-MR{1 + (p % 2)}",
        )  # fmt: skip
        template.SeriesDescription = "T1 AX"
        (ds,) = series_datasets(volume, template, sop_class_uid=MR_IMAGE_STORAGE)
        path = out_dir / "dicom" / site.station_prefix / patient_id / f"{accession}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        mask_path = None
        if lesion is not None:
            mask_path = out_dir / "masks" / f"{accession}.png"
            _write_mask(lesion[1], mask_path)
        written.append(
            LesionStudy(
                path=path,
                accession_number=accession,
                patient_id=patient_id,
                study_instance_uid=study["study_uid"],
                series_instance_uid=volume.series_instance_uid,
                sop_instance_uid=volume.sop_instance_uids[0],
                label=int(lesion is not None),
                mask_path=mask_path,
                lesion_pixels=0 if lesion is None else int(lesion[1].sum()),
                sex=sex,
                age=age,
                site=site.name,
                manufacturer=scanner.manufacturer,
            )
        )
    labels_csv = out_dir / "labels.csv"
    splits = _site_split(written, split, seed) if split is not None else None
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "label", *(["split"] if splits else [])])
        for s in written:
            writer.writerow([s.accession_number, s.label, *([splits[s.accession_number]] if splits else [])])
    # The site's own index of what it exported (originals: it stays with the export, like the
    # files themselves), read back by :func:`read_lesion_set`.
    index = [
        {**asdict(s), "path": s.path.relative_to(out_dir).as_posix(),
         "mask_path": None if s.mask_path is None else s.mask_path.relative_to(out_dir).as_posix()}
        for s in written
    ]  # fmt: skip
    (out_dir / "studies.json").write_text(json.dumps(index))
    return LesionSet(root=out_dir, labels_csv=labels_csv, studies=written)


def read_lesion_set(out_dir: Path) -> LesionSet:
    """An export written by :func:`write_lesion_studies` (its ``studies.json``), read back."""
    out_dir = Path(out_dir)
    studies = []
    for entry in json.loads((out_dir / "studies.json").read_text()):
        entry["path"] = out_dir / entry["path"]
        entry["mask_path"] = None if entry["mask_path"] is None else out_dir / entry["mask_path"]
        studies.append(LesionStudy(**entry))
    return LesionSet(root=out_dir, labels_csv=out_dir / "labels.csv", studies=studies)
