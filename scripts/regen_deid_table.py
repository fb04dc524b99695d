#!/usr/bin/env python3
"""Regenerate ``imaging/deid/data/table_e1_1.json`` from the standard's Table E.1-1.

Input: the table as published data (``shared/standards/ps3.15-table-e1-1-<release>.json``, one object
per row with ``tag``, ``name``, ``basicProfile`` and the option columns). Run it when a new DICOM
release adds rows, then review the diff: the engine is driven entirely by this file.

    python scripts/regen_deid_table.py ../shared/standards/ps3.15-table-e1-1-2024b.json --release 2024b
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
_TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")
_ACTIONS = {"D", "Z", "X", "K", "C", "U"}


def convert(rows: list[dict[str, str]], release: str) -> dict[str, object]:
    out: list[dict[str, object]] = []
    for row in rows:
        tag = row["tag"].upper().replace(" ", "")
        match = _TAG.match(tag)
        if match is None:
            if "ODD" in tag:  # the private-attributes row
                key = "private"
            else:
                raise SystemExit(f"unrecognised tag {row['tag']!r}")
        else:
            key = (match.group(1) + match.group(2)).lower()
        basic = row["basicProfile"].replace("*", "")
        if not set(basic.split("/")) <= _ACTIONS:
            raise SystemExit(f"unknown action {row['basicProfile']!r} for {tag}")
        options = {OPTION_COLUMNS[k]: v for k, v in row.items() if k in OPTION_COLUMNS and v}
        for value in options.values():
            if value not in _ACTIONS:
                raise SystemExit(f"unknown option action {value!r} for {tag}")
        out.append({"tag": key, "name": row["name"], "basic": basic, "options": options})
    return {"standard": "DICOM PS3.15 Table E.1-1", "release": release, "rows": out}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the standard's Table E.1-1 as JSON")
    parser.add_argument("--release", required=True, help="DICOM release, e.g. 2024b")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "imaging/deid/data/table_e1_1.json"
    )
    args = parser.parse_args()
    table = convert(json.loads(args.source.read_text()), args.release)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(table['rows'])} rows to {args.out}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
