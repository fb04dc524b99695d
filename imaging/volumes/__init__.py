"""Series as volumes: assembly with checked geometry, label volumes on the series grid, and
segmentation dataset versions.

``group_series(paths)`` -> ``{series_uid: [paths]}``; ``catalog_series()``, ``stored_series(uid)``
and ``load_stored_series(uid)`` for what the store holds; ``assemble_series(paths_or_datasets)``
-> :class:`Volume` (raises :class:`SeriesGeometryError`); ``read_label_volume(path, reference)``
-> (Z, Y, X) uint8 from NIfTI or DICOM SEG (raises :class:`LabelAlignmentError`);
``series_datasets(volume, template)`` -> one DICOM instance per slice;
``create_segmentation_dataset(...)`` and ``materialize_segmentation(version, cache_dir)`` for
training; ``write_anatomy_set(out_dir)`` writes the demo brain MR series and label maps.
"""

from imaging.volumes.anatomy import ANATOMY_LABEL_NAMES, AnatomySet, AnatomySubject, write_anatomy_set
from imaging.volumes.assemble import assemble_series, group_series
from imaging.volumes.catalog import catalog_series, load_stored_series, stored_series
from imaging.volumes.dataset import (
    SegmentationCreateReport,
    create_segmentation_dataset,
    materialize_segmentation,
)
from imaging.volumes.geometry import (
    GeometryIssue,
    GeometryIssueKind,
    GeometryReport,
    LabelAlignmentError,
    SeriesGeometryError,
    VolumeError,
    lps_affine,
)
from imaging.volumes.labels import align_to_reference, read_label_volume
from imaging.volumes.volume import Volume, nifti_bytes, nifti_image, write_nifti, zyx_ras_affine
from imaging.volumes.writer import MR_IMAGE_STORAGE, derived_uid, series_datasets

__all__ = [
    "ANATOMY_LABEL_NAMES",
    "MR_IMAGE_STORAGE",
    "AnatomySet",
    "AnatomySubject",
    "GeometryIssue",
    "GeometryIssueKind",
    "GeometryReport",
    "LabelAlignmentError",
    "SegmentationCreateReport",
    "SeriesGeometryError",
    "Volume",
    "VolumeError",
    "align_to_reference",
    "assemble_series",
    "catalog_series",
    "create_segmentation_dataset",
    "derived_uid",
    "group_series",
    "load_stored_series",
    "lps_affine",
    "materialize_segmentation",
    "nifti_bytes",
    "nifti_image",
    "read_label_volume",
    "series_datasets",
    "stored_series",
    "write_anatomy_set",
    "write_nifti",
    "zyx_ras_affine",
]
