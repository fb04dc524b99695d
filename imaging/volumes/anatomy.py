"""Synthetic subjects from real anatomy: brain MR series with PHI-bearing headers and label maps.

Source: Debian ``mricron-data`` (``/usr/share/mricron/templates``): the ``ch2`` T1 volume and
the AAL atlas on its 1 mm grid. Each synthetic subject is that head resampled to a coarse
grid (default 3 mm), warped by a seeded random elastic + affine deformation (MONAI), given a
scanner-like intensity (bias field, contrast, gain, noise), placed at a random table
position, and written as an axial DICOM MR series (one file per slice) with the identifiers
a real export carries. Its label map (0 background, 1 cerebellum, 2 deep grey nuclei, 3
occipital lobe: merged AAL regions, see ``_AAL_REGIONS``) is written as a NIfTI in the usual
converter orientation (X, Y, Z, RAS), and ``labels.csv`` keys it by the ORIGINAL accession
number, as a site would export it.

All names, identifiers and addresses are invented; the output is deterministic for a seed.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from imaging.demo_data import (
    _FAMILY,
    _GIVEN_F,
    _GIVEN_M,
    _OPERATORS,
    _PHYSICIANS,
    _SITES,
    _uid,
    set_identifying_headers,
)
from imaging.volumes.geometry import VolumeError
from imaging.volumes.volume import LPS_TO_RAS, Volume
from imaging.volumes.writer import MR_IMAGE_STORAGE, series_datasets

__all__ = [
    "ANATOMY_LABEL_NAMES",
    "TEMPLATES_DIR",
    "AnatomySet",
    "AnatomySubject",
    "write_anatomy_set",
]

TEMPLATES_DIR = Path("/usr/share/mricron/templates")
#: Label value -> structure (AAL regions merged).
ANATOMY_LABEL_NAMES = {0: "background", 1: "cerebellum", 2: "deep_grey_nuclei", 3: "occipital_lobe"}
#: AAL values merged per label (``aal.nii.txt``), chosen to be learnable on a 3 mm grid (27 uL
#: voxels): the cerebellum (hemispheres and vermis, 91-116: about 6,900 voxels), the deep grey
#: nuclei (caudate, putamen, pallidum and thalamus of both sides, 71-78: about 2,000 voxels,
#: grey against white matter on T1) and the whole occipital lobe (calcarine, cuneus, lingual,
#: superior/middle/inferior occipital, 43-54: about 6,200 voxels). The thalami alone (about 670
#: voxels, mostly boundary at 3 mm) and the lateral occipital gyri alone (a lobe without its
#: medial half) were poor targets: Dice 0.00 and 0.44 after 40 CPU epochs.
_AAL_REGIONS = {1: range(91, 117), 2: range(71, 79), 3: range(43, 55)}


@dataclass(frozen=True)
class _Scanner:
    manufacturer: str
    model: str
    field_strength: str
    gain: float
    noise: float


_SCANNERS = (
    _Scanner("SIEMENS", "Skyra", "3", 1.0, 0.02),
    _Scanner("GE MEDICAL SYSTEMS", "SIGNA Premier", "3", 1.15, 0.025),
    _Scanner("Philips Medical Systems", "Ingenia", "1.5", 0.85, 0.035),
    _Scanner("SIEMENS", "Aera", "1.5", 0.95, 0.03),
)


@dataclass(frozen=True)
class AnatomySubject:
    """What was written for one subject (originals: for tests and the demo only, never logged)."""

    files: tuple[Path, ...]
    label_path: Path
    accession_number: str
    patient_id: str
    patient_name: str
    series_instance_uid: str
    sex: str
    age: int
    site: str
    manufacturer: str
    volume: Volume  # the written series (original UIDs), for checks


@dataclass
class AnatomySet:
    """The written series, their label maps and ``labels.csv`` (``accession_number,label``)."""

    root: Path
    labels_csv: Path  # accession_number,label (the label: a NIfTI path relative to root)
    subjects: list[AnatomySubject] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [f for s in self.subjects for f in s.files]

    @property
    def dicom_dir(self) -> Path:
        return self.root / "dicom"

    @property
    def label_names(self) -> list[str]:
        return [ANATOMY_LABEL_NAMES[k] for k in sorted(ANATOMY_LABEL_NAMES)]


def _load_templates(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ch2 T1 and merged AAL labels on a ``spacing`` mm grid, cropped to the head, as RAS
    (X, Y, Z) arrays, with their affine."""
    import nibabel as nib
    from scipy import ndimage

    paths = [TEMPLATES_DIR / "ch2.nii.gz", TEMPLATES_DIR / "aal.nii.gz"]
    if not all(p.exists() for p in paths):
        raise VolumeError(
            f"the anatomy templates are missing from {TEMPLATES_DIR}: install the Debian package "
            "mricron-data (scripts/ci/install-apt.sh)"
        )
    t1_image, aal_image = (nib.as_closest_canonical(nib.load(str(p))) for p in paths)
    t1 = np.asarray(t1_image.dataobj, dtype=np.float32)
    aal = np.asarray(aal_image.dataobj).astype(np.int32)
    labels = np.zeros(aal.shape, dtype=np.uint8)
    for value, regions in _AAL_REGIONS.items():
        labels[np.isin(aal, list(regions))] = value
    head = np.argwhere(t1 > 0.1 * t1.max())
    low, high = head.min(axis=0), head.max(axis=0) + 1
    crop = (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))
    t1, labels = t1[crop], labels[crop]
    affine = np.array(t1_image.affine, dtype=np.float64)
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ low
    source = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factor = source / spacing
    t1 = ndimage.zoom(ndimage.gaussian_filter(t1, sigma=spacing / 2.5), factor, order=1)
    labels = ndimage.zoom(labels, factor, order=0)
    out_affine = affine.copy()
    out_affine[:3, :3] = affine[:3, :3] / factor
    return t1 / max(float(t1.max()), 1.0), labels, out_affine


def _subject_arrays(
    t1: np.ndarray, labels: np.ndarray, seed: int, scanner: _Scanner
) -> tuple[np.ndarray, np.ndarray]:
    """One subject: random elastic + affine warp (same for image and labels), scanner-like
    intensities; MR-like stored values 0..~1000.

    Image and one-hot labels are warped in ONE call (labels: argmax of the interpolated one-hot
    channels): ``Rand3DElastic`` re-draws its affine part (rotation, scale, translation) on every
    call even with ``randomize=False``, so warping them in two calls moved the labels off the
    image (Dice 0.4-0.75 between the two for the cerebellum)."""
    import torch
    from monai.transforms import Rand3DElastic, RandAdjustContrast, RandBiasField

    shape = t1.shape
    values = int(labels.max()) + 1
    warp = Rand3DElastic(
        sigma_range=(5, 7),
        magnitude_range=(40, 80),
        prob=1.0,
        rotate_range=(0.12, 0.12, 0.12),
        scale_range=(0.08, 0.08, 0.08),
        translate_range=(2, 2, 2),
        padding_mode="zeros",
    )
    warp.set_random_state(seed)
    one_hot = [(labels == k).astype(np.float32) for k in range(values)]
    stacked = torch.from_numpy(np.stack([t1, *one_hot]))
    warped = warp(stacked, spatial_size=shape, mode="bilinear")
    image = warped[:1]
    # Outside the warped field of view every channel is 0: argmax gives background.
    label = torch.argmax(torch.as_tensor(warped[1:]), dim=0, keepdim=True)
    bias = RandBiasField(coeff_range=(0.1, 0.3), prob=1.0)
    bias.set_random_state(seed + 1)
    contrast = RandAdjustContrast(gamma=(0.7, 1.4), prob=1.0)
    contrast.set_random_state(seed + 2)
    intensity = np.asarray(contrast(bias(image)))
    rng = np.random.default_rng(seed + 3)
    array: np.ndarray = intensity[0] * scanner.gain
    array = array + rng.normal(0, scanner.noise, array.shape) * (array > 0.02)
    array = np.clip(array, 0, None)
    stored = np.round(array / max(float(array.max()), 1e-6) * 1000.0)
    return stored.astype(np.float32), np.asarray(label)[0].round().astype(np.uint8)


def _axial(data: np.ndarray, ras_affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """RAS (X, Y, Z) array -> axial LPS (Z, Y, X) array (columns to the patient's left, rows to
    posterior, slices superior) and the LPS position of its first voxel."""
    zyx = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    nx, ny = data.shape[0], data.shape[1]
    first = ras_affine @ np.array([nx - 1, ny - 1, 0, 1.0])
    lps = LPS_TO_RAS @ first
    return zyx, (float(lps[0]), float(lps[1]), float(lps[2]))


def _template(
    *, patient: dict[str, str], study: dict[str, str], site_index: int, scanner: _Scanner, station: str
) -> Dataset:
    site = _SITES[site_index]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"]
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study["time"]
    ds.Modality = "MR"
    set_identifying_headers(
        ds,
        patient=patient,
        study=study,
        site=site,
        station=station,
        manufacturer=scanner.manufacturer,
        model=scanner.model,
    )
    ds.StudyDescription = f"MR BRAIN {patient['name'].replace('^', ' ')}"
    ds.SeriesDescription = "T1 MPRAGE AX"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SK", "SP", "MP"]
    ds.ScanOptions = "IR"
    ds.MRAcquisitionType = "3D"
    ds.RepetitionTime = "2300"
    ds.EchoTime = "2.98"
    ds.InversionTime = "900"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = scanner.field_strength
    ds.StudyID = study["accession"][-6:]
    ds.SeriesNumber = 3
    ds.AcquisitionNumber = 1
    ds.WindowCenter = "500"
    ds.WindowWidth = "1000"
    ds.StudyInstanceUID = study["study_uid"]
    return ds


def write_anatomy_set(
    out_dir: Path, *, subjects: int = 10, seed: int = 0, spacing: float = 3.0
) -> AnatomySet:
    """Write ``subjects`` synthetic brain MR series with label maps and ``labels.csv``.

    Series go to ``out_dir/dicom/<site code>/<patient id>/<accession>/<n>.dcm`` (what a PACS
    sends: ingest ``out_dir/dicom``), label maps to ``out_dir/labels/<accession>.nii.gz``.
    Deterministic for a given ``seed``.
    """
    if subjects < 1:
        raise ValueError("subjects must be at least 1")
    if not 1.0 <= spacing <= 8.0:
        raise ValueError("spacing must be between 1 and 8 mm")
    out_dir = Path(out_dir)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    t1, atlas, ras_affine = _load_templates(spacing)
    rng = np.random.default_rng(seed)
    base_date = dt.date(2024, 3, 4)
    written: list[AnatomySubject] = []
    for p in range(subjects):
        site_index = p % len(_SITES)
        site = _SITES[site_index]
        scanner = _SCANNERS[(p + p // len(_SITES)) % len(_SCANNERS)]
        sex = "F" if rng.random() < 0.5 else "M"
        given = str(rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M))
        age = int(rng.integers(20, 85))
        date = base_date + dt.timedelta(days=int(rng.integers(0, 500)))
        birth = date - dt.timedelta(days=age * 365 + int(rng.integers(0, 365)))
        patient_id = f"{site.station_prefix}M{seed % 100:02d}{p:04d}"
        patient = {
            "name": f"{rng.choice(_FAMILY)}^{given}",
            "id": patient_id,
            "birth_date": birth.strftime("%Y%m%d"),
            "sex": sex,
            "age": str(age),
            "mrn2": f"MRN{int(rng.integers(10**6, 10**7))}",
        }
        seconds = int(rng.integers(7 * 3600, 19 * 3600))
        accession = f"M{seed % 100:02d}{p:05d}"
        study = {
            "accession": accession,
            "date": date.strftime("%Y%m%d"),
            "time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
            "referrer": str(rng.choice(_PHYSICIANS)),
            "operator": str(rng.choice(_OPERATORS)),
            "study_uid": _uid("mr-study", seed, p),
        }
        image, labels = _subject_arrays(t1, atlas, seed * 1000 + p, scanner)
        image_zyx, origin = _axial(image, ras_affine)
        labels_zyx, _ = _axial(labels, ras_affine)
        table = rng.uniform(-20, 20, size=3)  # table position differs per exam
        dz, dy, dx = (
            float(abs(ras_affine[2, 2])),
            float(abs(ras_affine[1, 1])),
            float(abs(ras_affine[0, 0])),
        )
        volume = Volume(
            array=image_zyx,
            spacing=(dz, dy, dx),
            origin=(origin[0] + table[0], origin[1] + table[1], origin[2] + table[2]),
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            study_instance_uid=study["study_uid"],
            series_instance_uid=_uid("mr-series", seed, p),
            frame_of_reference_uid=_uid("mr-frame", seed, p),
            sop_instance_uids=tuple(_uid("mr-sop", seed, p, k) for k in range(image_zyx.shape[0])),
        )
        station = f"{site.station_prefix}-MR{1 + (p % 2)}"
        template = _template(
            patient=patient, study=study, site_index=site_index, scanner=scanner, station=station
        )
        folder = out_dir / "dicom" / site.station_prefix / patient_id / accession
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for k, ds in enumerate(series_datasets(volume, template, sop_class_uid=MR_IMAGE_STORAGE)):
            path = folder / f"{k + 1:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        label_path = out_dir / "labels" / f"{accession}.nii.gz"
        _write_converter_nifti(volume, labels_zyx, label_path)
        written.append(
            AnatomySubject(
                files=tuple(files),
                label_path=label_path,
                accession_number=accession,
                patient_id=patient_id,
                patient_name=patient["name"],
                series_instance_uid=volume.series_instance_uid,
                sex=sex,
                age=age,
                site=site.name,
                manufacturer=scanner.manufacturer,
                volume=volume,
            )
        )
    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "label"])
        for s in written:
            writer.writerow([s.accession_number, s.label_path.relative_to(out_dir).as_posix()])
    return AnatomySet(root=out_dir, labels_csv=labels_csv, subjects=written)


def _write_converter_nifti(volume: Volume, labels_zyx: np.ndarray, path: Path) -> None:
    """Labels as a converter writes them: (X, Y, Z) array, affine to RAS."""
    import nibabel as nib

    xyz = np.ascontiguousarray(np.transpose(labels_zyx, (2, 1, 0)))
    image = nib.Nifti1Image(xyz, LPS_TO_RAS @ volume.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
