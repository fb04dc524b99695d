"""Model card (Markdown) of a segmentation model: structures, geometry, Dice/HD95, subgroups."""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig
from training.model_card import _fmt, subgroup_section
from training.segmentation.evaluation import SegmentationReport
from training.segmentation.spec import SegmentationSpec

__all__ = ["render_segmentation_card"]


def render_segmentation_card(
    *,
    config: TrainConfig,
    spec: SegmentationSpec,
    dataset_summary: dict[str, Any],
    report: SegmentationReport,
    run_id: str,
    git_commit: str,
    versions: dict[str, str],
    volumes_per_s: float,
) -> str:
    """The card; it names the run and dataset version so every number can be traced back."""
    structures = ", ".join(f"{k} {name}" for k, name in spec.labels.items())
    lines = [
        f"# Model card: {config.registry.model_name}",
        "",
        "**Status: pending review.** Not for clinical use until approved under the RadGate policy.",
        "",
        "## Intended use",
        f"Research segmentation of {len(spec.labels)} structures ({structures}) on de-identified "
        "3D series; results as DICOM Segmentation and a Structured Report of volumes, for review.",
        "",
        "## Provenance",
        f"- MLflow run: `{run_id}`",
        f"- Dataset version: `{dataset_summary.get('id')}` ({dataset_summary.get('name')}; "
        f"{dataset_summary.get('series', 'n/a')} series, {dataset_summary.get('patients', 'n/a')} "
        "patients, patient-level split)",
        f"- Code: git `{git_commit}`",
        f"- Recipe: `{config.name}`; network `{spec.network}`; voxels resampled to "
        f"{' x '.join(f'{s:g}' for s in spec.spacing)} mm (z, y, x); patch "
        f"{' x '.join(str(s) for s in spec.roi_size)}, sliding-window overlap {spec.overlap}; "
        f"intensity `{spec.intensity}`; {config.optim.max_epochs} epochs, lr {config.optim.lr}, "
        f"seed {config.run.seed}, {config.run.workers} worker(s)",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- Training throughput: {volumes_per_s:.2f} volumes/s (steady state)",
        "",
        f"## Performance (test split, {len(report.cases)} series; on the model grid)",
        "| structure | Dice | HD95 (mm) | cases |",
        "|---|---|---|---|",
    ]
    for name in [*report.structures, "mean"]:
        m = report.overall[name]
        lines.append(f"| {name} | {_fmt(m['dice'])} | {_fmt(m['hd95'])} | {int(m['n'])} |")
    lines += [
        "",
    ]
    lines += subgroup_section(
        report.subgroups, {"mean Dice": "dice", "mean HD95 (mm)": "hd95"},
        largest_gap=report.largest_gap, min_size=config.evaluation.min_subgroup_size, unit="series",
    )  # fmt: skip
    lines += [
        "",
        "## Limitations",
        "- Few test series: Dice and HD95 carry wide uncertainty, subgroup rows even more so.",
        "- Only the structures above are segmented; anatomy, sequences, sites or scanners absent "
        "from the data are untested.",
        "- Dice and HD95 are measured on the resampled model grid, not the source grid.",
        "",
    ]
    return "\n".join(lines)
