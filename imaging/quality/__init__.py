"""Dataset quality and bias report: counts per split and label, subgroup balance, duplicates
(pixel hash and perceptual hash) within and across splits, acquisition consistency, unreadable
pixels, with warnings judged against ``configs/compliance/thresholds.yaml``.

``build_report(version)`` -> :class:`DatasetReport`; ``write_report(report, out_dir)`` (JSON,
HTML, PNG); ``log_dataset_report(version)`` logs it to the active MLflow run (for training).
CLI: ``radgate dataset report NAME[@VERSION]``.
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from imaging.quality.pixels import ImageFacts, read_facts
    from imaging.quality.render import render_html, save_plots, write_report
    from imaging.quality.report import REPORT_SCHEMA, SUBGROUPS, DatasetReport, Warning_, build_report
    from imaging.quality.tracking import ARTIFACT_DIR, QUALITY_TAG, log_dataset_report

__all__ = [
    "ARTIFACT_DIR",
    "QUALITY_TAG",
    "REPORT_SCHEMA",
    "SUBGROUPS",
    "DatasetReport",
    "ImageFacts",
    "Warning_",
    "build_report",
    "log_dataset_report",
    "read_facts",
    "render_html",
    "save_plots",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
