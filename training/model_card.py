"""Model card (Markdown) generated from what a run recorded: data, recipe, metrics, subgroups, limits."""

from __future__ import annotations

import math
from typing import Any

from training.config import TrainConfig
from training.evaluation import EvaluationReport

__all__ = ["render_model_card", "subgroup_section"]


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def subgroup_section(
    subgroups: dict[str, dict[str, dict[str, float]]],
    columns: dict[str, str],
    *,
    largest_gap: tuple[str, str, float],
    min_size: int,
    unit: str,
) -> list[str]:
    """The card's subgroup section: the largest gap, then one row per attribute value.

    ``columns`` maps a column heading to the metric key of each subgroup's figures.
    """
    attribute, metric, gap = largest_gap
    lines = [
        "## Subgroups (test split)",
        f"Largest gap: {attribute or 'n/a'} {metric} {_fmt(gap)} (subgroups with at least "
        f"{min_size} {unit}).",
        "",
        "| attribute | value | n | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for key, groups in subgroups.items():
        for value, m in groups.items():
            cells = " | ".join(_fmt(m[k]) for k in columns.values())
            lines.append(f"| {key} | {value} | {int(m['n'])} | {cells} |")
    return lines


def render_model_card(
    *,
    config: TrainConfig,
    dataset_summary: dict[str, Any],
    report: EvaluationReport,
    run_id: str,
    git_commit: str,
    versions: dict[str, str],
    label_names: list[str],
    images_per_s: float,
) -> str:
    """The card; it names the run and dataset version so every number can be traced back."""
    o = report.overall
    lines = [
        f"# Model card: {config.registry.model_name}",
        "",
        "**Status: pending review.** Not for clinical use until approved under the RadGate policy.",
        "",
        "## Intended use",
        f"Research triage of {', '.join(label_names)} on de-identified 2D radiographs, as a second reader. "
        "Outputs are probabilities with an operating point chosen on the validation split.",
        "",
        "## Provenance",
        f"- MLflow run: `{run_id}`",
        f"- Dataset version: `{dataset_summary['id']}` ({dataset_summary['name']}; "
        f"{dataset_summary['instances']} instances, {dataset_summary['patients']} patients, "
        "patient-level split)",
        f"- Code: git `{git_commit}`",
        f"- Recipe: `{config.name}`; network `{config.model.network}`; input {config.data.spatial_size[0]}x"
        f"{config.data.spatial_size[1]}, intensity `{config.data.intensity}`; "
        f"{config.optim.max_epochs} epochs, "
        f"lr {config.optim.lr}, batch {config.data.batch_size}, seed {config.run.seed}, "
        f"{config.run.workers} worker(s)",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- Training throughput: {images_per_s:.1f} images/s (steady state)",
        "",
        "## Data",
        "| split | " + " | ".join(label_names) + " |",
        "|---|" + "---|" * len(label_names),
    ]
    for split, counts in sorted(dataset_summary.get("splits", {}).items()):
        lines.append(f"| {split} | " + " | ".join(str(counts.get(n, 0)) for n in label_names) + " |")
    lines += [
        "",
        f"## Performance (test split, threshold {report.threshold:.3f} chosen on validation "
        f"by `{config.evaluation.operating_point}`)",
        f"- AUROC {_fmt(o['auroc'])}; sensitivity {_fmt(o['sensitivity'])}; "
        f"specificity {_fmt(o['specificity'])}",
        f"- PPV {_fmt(o['ppv'])}; NPV {_fmt(o['npv'])}; accuracy {_fmt(o['accuracy'])}; n = {int(o['n'])}",
        f"- Calibration: ECE {_fmt(o['ece'])} ({config.evaluation.calibration_bins} bins; "
        "see reliability.png)",
        "",
    ]
    lines += subgroup_section(
        report.subgroups,
        {"AUROC": "auroc", "sensitivity": "sensitivity", "specificity": "specificity"},
        largest_gap=report.largest_gap,
        min_size=config.evaluation.min_subgroup_size,
        unit="images",
    )
    lines += [
        "",
        "## Limitations",
        "- Small test sets give wide confidence intervals; subgroup figures on few images are "
        "indicative only.",
        "- Site values are keyed pseudonyms; performance on sites or devices not in the data is unknown.",
        "- Trained from scratch on the data above; check the saliency sanity report before approval.",
        "",
    ]
    return "\n".join(lines)
