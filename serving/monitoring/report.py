"""Drift reports: ``drift.json`` (machine-readable) and ``drift.html`` with PNG plots beside it."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.monitoring.drift import EMBEDDING_FEATURE, DriftResult, FeatureTest
from training.reference_profile import ReferenceProfile

__all__ = ["write_report"]


def _plot_continuous(ax: Any, test: FeatureTest, ref: Sequence[float], cur: Sequence[float]) -> None:
    both = np.concatenate([np.asarray(ref, float), np.asarray(cur, float)])
    bins = np.histogram_bin_edges(both, bins=30) if np.ptp(both) > 0 else 10
    ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
    ax.hist(cur, bins=bins, density=True, alpha=0.5, label="live")
    ax.legend(fontsize=7)


def _plot_categorical(ax: Any, test: FeatureTest) -> None:
    ref = test.details.get("reference_proportions", {})
    cur = test.details.get("live_proportions", {})
    cats = sorted(set(ref) | set(cur))[:15]
    x = np.arange(len(cats))
    ax.bar(x - 0.2, [ref.get(c, 0) for c in cats], width=0.4, label="reference")
    ax.bar(x + 0.2, [cur.get(c, 0) for c in cats], width=0.4, label="live")
    ax.set_xticks(x, cats, rotation=30, ha="right", fontsize=6)
    ax.legend(fontsize=7)


def _plot_embedding(ax: Any, ref: np.ndarray, cur: np.ndarray) -> None:
    if ref.shape[1] >= 2 and cur.shape[1] >= 2:
        ax.scatter(ref[:, 0], ref[:, 1], s=6, alpha=0.5, label="reference")
        ax.scatter(cur[:, 0], cur[:, 1], s=6, alpha=0.5, label="live")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    else:
        ax.hist(ref[:, 0], bins=30, density=True, alpha=0.5, label="reference")
        ax.hist(cur[:, 0], bins=30, density=True, alpha=0.5, label="live")
    ax.legend(fontsize=7)


def _plots(
    result: DriftResult,
    profile: ReferenceProfile,
    live_rows: Sequence[Mapping[str, Any]],
    live_embeddings: np.ndarray,
    out_dir: Path,
    all_plots: bool,
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    # Rendering costs about 0.1-0.8 s per PNG on a busy 2-core box: plot what a reader needs.
    wanted = {t.feature for t in result.tests if t.drifted} | {"score", EMBEDDING_FEATURE}
    for test in result.tests:
        if test.skipped or not (all_plots or test.feature in wanted):
            continue
        fig, ax = plt.subplots(figsize=(4, 2.8), dpi=72, layout="constrained")
        if test.feature == EMBEDDING_FEATURE:
            _plot_embedding(ax, np.asarray(profile.embedding_reference, float), live_embeddings)
        elif test.kind == "continuous":
            cur = [float(r[test.feature]) for r in live_rows if r.get(test.feature) is not None]
            _plot_continuous(ax, test, profile.continuous[test.feature], cur)
        else:
            _plot_categorical(ax, test)
        flag = " DRIFT" if test.drifted else ""
        ax.set_title(f"{test.feature}{flag} (p_adj={test.p_adjusted:.2g})", fontsize=8)
        name = f"{test.feature}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        files[test.feature] = name
    return files


def _html(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    e = html.escape
    verdict = "DRIFT DETECTED" if report["drift"]["drifted"] else "no drift"
    if report["drift"]["insufficient_data"]:
        verdict = "insufficient data"
    rows = []
    for t in report["drift"]["tests"]:

        def num(value: Any) -> str:
            return "" if value is None else f"{value:.4g}"

        style = ' style="background:#fdd"' if t["drifted"] else ""
        rows.append(
            f"<tr{style}><td>{e(t['feature'])}</td><td>{e(t['test'])}</td><td>{num(t['statistic'])}</td>"
            f"<td>{num(t['p_value'])}</td><td>{num(t['p_adjusted'])}</td>"
            f"<td>{e(t['effect_name'])}={num(t['effect'])} (min {t['min_effect']:g})</td>"
            f"<td>{t['n_reference']}/{t['n_live']}</td><td>{'yes' if t['drifted'] else ''}"
            f"{e(t['skipped'] or '')}</td></tr>"
        )
    images = "".join(
        f'<figure><img src="{e(name)}" alt="{e(feature)}"><figcaption>{e(feature)}</figcaption></figure>'
        for feature, name in plots.items()
    )
    meta = report["window"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {e(report["model"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}figure{{display:inline-block;margin:4px}}</style>
</head><body>
<h1>Drift report: {e(report["model"])} version {e(str(report["model_version"]))}</h1>
<p><b>{e(verdict)}</b>. Window {e(meta["start"])} to {e(meta["end"])}: {report["drift"]["n_live"]} live
requests against {report["drift"]["n_reference"]} training images. Correction:
{e(report["drift"]["correction"])}, alpha {report["drift"]["alpha"]}.</p>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p</th><th>p adjusted</th><th>effect</th>
<th>n ref/live</th><th>drift</th></tr>{"".join(rows)}</table>
<h2>Distributions</h2>{images}
</body></html>
"""


def write_report(
    report: Mapping[str, Any],
    result: DriftResult,
    profile: ReferenceProfile,
    live_rows: Sequence[Mapping[str, Any]],
    live_embeddings: np.ndarray,
    out_dir: Path,
    *,
    all_plots: bool = False,
) -> dict[str, Path]:
    """Write ``drift.json``, ``drift.html`` and PNG plots into ``out_dir``: the drifted features,
    the score and the embedding (every tested feature with ``all_plots``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, profile, live_rows, live_embeddings, out_dir, all_plots)
    full = {**report, "plots": plots}
    json_path = out_dir / "drift.json"
    json_path.write_text(json.dumps(full, indent=2, sort_keys=True))
    html_path = out_dir / "drift.html"
    html_path.write_text(_html(full, plots))
    return {"json": json_path, "html": html_path}
