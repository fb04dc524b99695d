"""Dataset versions: immutable manifests of labelled, de-identified instances with a patient-level split.

``create_dataset(name, labels_csv, split=..., group_by="patient")`` -> :class:`CreateReport`;
``get_dataset(ref)`` (id, id prefix, ``NAME`` or ``NAME@IDPREFIX``) -> :class:`DatasetVersion`;
``materialize(version, split)`` -> rows with local file paths for MONAI.
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from imaging.datasets.labels import KeyKind, read_labels
    from imaging.datasets.manifest import (
        SUBGROUP_ATTRIBUTES,
        DatasetError,
        DatasetManifest,
        GroupBy,
        ManifestItem,
        SeriesItem,
        Split,
        Task,
        parse_split,
    )
    from imaging.datasets.models import DatasetVersionRecord
    from imaging.datasets.service import (
        DEFAULT_SPLIT,
        CreateReport,
        DatasetVersion,
        create_dataset,
        get_dataset,
        list_datasets,
        materialize,
    )

__all__ = [
    "DEFAULT_SPLIT",
    "SUBGROUP_ATTRIBUTES",
    "CreateReport",
    "DatasetError",
    "DatasetManifest",
    "DatasetVersion",
    "DatasetVersionRecord",
    "GroupBy",
    "KeyKind",
    "ManifestItem",
    "SeriesItem",
    "Split",
    "Task",
    "create_dataset",
    "get_dataset",
    "list_datasets",
    "materialize",
    "parse_split",
    "read_labels",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
