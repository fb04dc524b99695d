"""Runs the atheris target briefly over mutated real DICOM (longer runs: tests/fuzz/fuzz_deid.py)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from governance.keys import ProjectKey
from imaging.corpus import packaged_dicom_files
from imaging.deid import Deidentifier, load_profile
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom


def _mutations(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            choice = rng.random()
            pos = rng.randrange(len(buf)) if buf else 0
            if choice < 0.5 and buf:
                buf[pos] = rng.randrange(256)
            elif choice < 0.7:
                del buf[pos : pos + rng.randint(1, 64)]
            elif choice < 0.85:
                buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
            else:
                buf = buf[: max(0, pos)]
        out.append(bytes(buf))
    return out


def test_mutated_real_files_never_crash() -> None:
    quiet_pydicom()
    key, profile = ProjectKey(b"\x09" * 32), load_profile()
    engine = Deidentifier(profile, key)
    rng = random.Random(1234)
    seeds = [p for p in packaged_dicom_files() if p.stat().st_size < 200_000][:40]
    assert seeds
    outcomes = set()
    for seed in seeds:
        for data in _mutations(seed.read_bytes(), rng, 25):
            result = process_bytes(data, engine, key, profile)
            outcomes.add(result.outcome)
            assert (result.output is not None) == (result.outcome is Outcome.DEIDENTIFIED)
    assert outcomes == {Outcome.DEIDENTIFIED, Outcome.QUARANTINED}


def test_atheris_target_runs(tmp_path: Path) -> None:
    import atheris  # noqa: F401 (the [test] extra installs it; missing is a failure)

    corpus = tmp_path / "seeds"
    corpus.mkdir()
    for i, path in enumerate(p for p in packaged_dicom_files() if p.stat().st_size < 20_000):
        (corpus / f"{i}.dcm").write_bytes(path.read_bytes())
        if i >= 20:
            break
    target = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_deid.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(target),
            "-runs=3000",
            "-max_len=65536",
            # the peak RSS libFuzzer checks is carried over exec from this pytest process
            "-rss_limit_mb=0",
            "-malloc_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr


def test_found_inputs_are_quarantined_not_crashes() -> None:
    """Inputs the fuzzer once crashed on (tests/fuzz/regressions/deid-*): e.g. an RLE stream on
    which pylibjpeg-rle's Rust decoder panics (PyO3's PanicException is a BaseException, which
    the codec wrapper let through)."""
    quiet_pydicom()
    key, profile = ProjectKey(b"\x09" * 32), load_profile("research")
    engine = Deidentifier(profile, key)
    found = sorted((Path(__file__).resolve().parents[1] / "fuzz" / "regressions").glob("deid-*"))
    assert found
    for path in found:
        result = process_bytes(path.read_bytes(), engine, key, profile)
        assert result.outcome is Outcome.QUARANTINED and result.reason is not None, path.name
