"""Write a :class:`DatasetReport` as ``report.json``, ``report.html`` (self-contained) and PNG plots."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from imaging.quality.report import DatasetReport

__all__ = ["render_html", "save_plots", "write_report"]


def save_plots(report: DatasetReport, out_dir: Path) -> list[Path]:
    """Bar charts of labels per split and per subgroup, and the image-size histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = report.dataset["label_names"]
    paths: list[Path] = []

    def stacked(ax: Any, groups: dict[str, dict[str, Any]], title: str) -> None:
        keys = list(groups)
        bottom = [0] * len(keys)
        for name in names:
            heights = [groups[k]["labels"].get(name, 0) for k in keys]
            ax.bar(keys, heights, bottom=bottom, label=name)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    stacked(ax, report.splits, "instances per split and label")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "splits.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    attributes = list(report.subgroups)
    fig, axes = plt.subplots(1, len(attributes), figsize=(4 * len(attributes), 3.4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes, strict=True):
        stacked(ax, report.subgroups[attribute], attribute)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "subgroups.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    sizes = report.acquisition.get("size", {})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(list(sizes), list(sizes.values()))
    ax.set_title("image size (rows x columns)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    paths.append(out_dir / "sizes.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: DatasetReport, plots: list[Path]) -> str:
    """A self-contained HTML page (plots inlined as PNG data URIs)."""
    d = report.to_dict()
    names = d["dataset"]["label_names"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Dataset report {html.escape(d['dataset']['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
        ".warn{color:#a30}.ok{color:#070}</style></head><body>",
        f"<h1>Dataset {html.escape(d['dataset']['name'])} <small>{d['dataset']['id'][:12]}</small></h1>",
        f"<p>{d['dataset']['instances']} instances, {d['dataset']['patients']} patients, "
        f"{d['dataset']['studies']} studies; generated {html.escape(d['generated_at'])}. Status: "
        + (
            "<b class='ok'>passed</b>"
            if d["status"] == "passed"
            else f"<b class='warn'>{len(d['warnings'])} warning(s)</b>"
        )
        + "</p>",
    ]
    if d["warnings"]:
        parts.append("<h2>Warnings</h2>")
        parts.append(
            _table(
                [
                    [w["code"], w["message"], json.dumps(w["value"]), json.dumps(w["threshold"])]
                    for w in d["warnings"]
                ],
                ["code", "finding", "value", "threshold"],
            )
        )
    for path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Splits</h2>")
    parts.append(
        _table(
            [
                [s, v["instances"], v["patients"], *[v["labels"][n] for n in names]]
                for s, v in d["splits"].items()
            ],
            ["split", "instances", "patients", *names],
        )
    )
    parts.append("<h2>Subgroups</h2>")
    for attribute, groups in d["subgroups"].items():
        parts.append(f"<h3>{html.escape(attribute)}</h3>")
        parts.append(
            _table(
                [
                    [
                        value,
                        g["instances"],
                        g["patients"],
                        g["share"],
                        g["positive_rate"],
                        *[g["labels"][n] for n in names],
                        *g["splits"].values(),
                    ]
                    for value, g in groups.items()
                ],
                ["value", "instances", "patients", "share", "positive rate", *names, "train", "val", "test"],
            )
        )
    dup = d["duplicates"]
    parts.append(f"<h2>Duplicates</h2><p>{html.escape(dup['method'])}</p>")
    parts.append(
        _table(
            [[k, dup[k]["within_split"], dup[k]["across_splits"]] for k in ("exact", "near")],
            ["kind", "pairs within a split", "pairs across splits"],
        )
    )
    pairs = dup["exact"]["pairs"] + dup["near"]["pairs"]
    if pairs:
        parts.append(
            _table(
                [
                    [
                        p["a"],
                        p["b"],
                        p["split_a"],
                        p["split_b"],
                        p["distance"],
                        p["same_patient"],
                        p["label_a"],
                        p["label_b"],
                    ]
                    for p in pairs
                ],
                ["a", "b", "split a", "split b", "distance", "same patient", "label a", "label b"],
            )
        )
    parts.append("<h2>Acquisition</h2>")
    acq = d["acquisition"]
    parts.append(
        _table(
            [[k, ", ".join(f"{v} ({n})" for v, n in acq[k].items())] for k in acq if k != "size_outliers"],
            ["attribute", "values (count)"],
        )
    )
    if acq["size_outliers"]:
        parts.append(
            _table(
                [
                    [o["sha256"], o["dimension"], o["value"], o["median"], o["mads"]]
                    for o in acq["size_outliers"]
                ],
                ["instance", "dimension", "value", "median", "MADs"],
            )
        )
    parts.append(f"<h2>Pixels</h2><p>{d['pixels']['unreadable']} instance(s) without usable pixel data</p>")
    if d["pixels"]["instances"]:
        parts.append(
            _table([[u["sha256"], u["reason"]] for u in d["pixels"]["instances"]], ["instance", "reason"])
        )
    parts.append("<h2>Thresholds</h2><pre>" + html.escape(json.dumps(d["thresholds"], indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: DatasetReport, out_dir: Path) -> dict[str, Path]:
    """``report.json``, ``report.html`` and ``plots/*.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = save_plots(report, out_dir / "plots")
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=1, default=str))
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(report, plots))
    return {"json": json_path, "html": html_path, **{p.stem: p for p in plots}}
