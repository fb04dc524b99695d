#!/usr/bin/env python3
"""Benchmark: `radgate deid` against raw pydicom read + write and dicognito, on one corpus.

Builds >= 1,000 files from the real DICOM that packages ship (pydicom, pydicom-data,
deid-data, pynetdicom) with PHI planted where tools leak it, then measures in one run:
raw pydicom read+write (the limit), radgate with one worker and with all cores, dicognito;
and scans every output for residual PHI with the independent scanner.

    python scripts/bench/deid.py [--copies 5] [--rounds 2]

Targets (issue 2): one worker >= 0.8x raw read+write; all cores >= 1.8x one worker (2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imaging.corpus import packaged_dicom_files
from imaging.phi_corpus import PlantedFile, identifying_values, plant_phi


def _raw(files: list[Path], out: Path) -> None:
    for i, path in enumerate(files):
        ds = dcmread(path)
        ds.save_as(out / f"{i}.dcm")


def _dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    for i, path in enumerate(files):
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / f"{i}.dcm")


def _radgate(workers: int) -> Callable[[list[Path], Path], None]:
    def run(files: list[Path], out: Path) -> None:
        from imaging.ingest import Sink, run_files

        report = run_files(files, sink=Sink.FOLDER, output_dir=out, workers=workers, source="bench")
        assert report.inputs == report.deidentified + report.quarantined == len(files)

    return run


def _timed(
    fn: Callable[[list[Path], Path], None], files: list[Path], root: Path, name: str
) -> tuple[float, Path]:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    fn(files, out)
    return len(files) / (time.perf_counter() - start), out


def _leaks(planted: list[PlantedFile], outputs: list[Path]) -> int:
    """Outputs (any file) holding any value planted in or identifying any input.

    Single-token values are matched against the output's tokens (a set lookup), values with
    spaces by substring: whole-corpus scans in seconds, where one regex per value took hours.
    """
    values: set[str] = set()
    for item in planted:
        values.update(item.planted)
        values.update(identifying_values(item.path.read_bytes()))
    single = {v.lower() for v in values if not re.search(r"[^0-9A-Za-z.]", v)}
    multi = [v.lower() for v in values if re.search(r"[^0-9A-Za-z.]", v)]
    splitter = re.compile(r"[^0-9a-z.]+")
    leaking = 0
    for path in outputs:
        data = path.read_bytes()
        # Scan the header, not the pixels: text sits before (7FE0,0010); pixel bytes would make
        # the substring search hundreds of times slower and find nothing readable.
        cut = data.rfind(b"\xe0\x7f\x10\x00")
        text = (data[:cut] if cut > 0 else data).decode("latin-1").lower()
        tokens = set(splitter.split(text))
        tokens |= {t.strip(".") for t in tokens}
        if single & tokens or any(v in text for v in multi):
            leaking += 1
    return leaking


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=5, help="planted copies per packaged file")
    parser.add_argument("--rounds", type=int, default=2, help="best of N rounds per method")
    parser.add_argument("--scan", action="store_true", help="also scan outputs for residual PHI (slower)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    root = Path(tempfile.mkdtemp(prefix="radgate-bench-"))
    os.environ.setdefault("RADGATE_HOME", str(root / "home"))
    os.environ.setdefault("RADGATE_PROJECT_KEY", os.urandom(32).hex())
    planted = plant_phi(packaged_dicom_files(), root / "corpus", copies=args.copies, seed=1)
    files = [p.path for p in planted]
    print(f"corpus: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB", file=sys.stderr)
    cores = os.cpu_count() or 1
    methods: dict[str, Callable[[list[Path], Path], None]] = {
        "raw_pydicom": _raw,
        "radgate_1": _radgate(1),
        f"radgate_{cores}": _radgate(cores),
        "dicognito": _dicognito,
    }
    best: dict[str, float] = {}
    outs: dict[str, Path] = {}
    for round_ in range(args.rounds):
        for name, fn in methods.items():  # interleaved: drift on a noisy machine hits all alike
            rate, outs[name] = _timed(fn, files, root, name)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {round_ + 1}: {name:>12} {rate:7.1f} files/s", file=sys.stderr)
    one, many = best["radgate_1"], best[f"radgate_{cores}"]
    result = {
        "bench": "deid",
        "value": round(one / best["raw_pydicom"], 3),
        "target": 0.8,
        "better": "higher",
        "unit": "radgate 1 worker / raw pydicom read+write",
        "files": len(files),
        "cores": cores,
        "files_per_s": {k: round(v, 1) for k, v in best.items()},
        "all_cores_vs_one_worker": round(many / one, 3),
        "all_cores_target": 1.8,
        "dicognito_vs_raw": round(best["dicognito"] / best["raw_pydicom"], 3),
        "radgate_vs_dicognito": round(one / best["dicognito"], 3),
    }
    if args.scan:
        radgate_out = [p for p in outs["radgate_1"].rglob("*.dcm")]
        dicognito_out = list(outs["dicognito"].glob("*.dcm"))
        result["outputs_with_residual_phi"] = {
            "radgate": _leaks(planted, radgate_out),
            "radgate_outputs": len(radgate_out),
            "dicognito": _leaks(planted, dicognito_out),
            "dicognito_outputs": len(dicognito_out),
        }
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
