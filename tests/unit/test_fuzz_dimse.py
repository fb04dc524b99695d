"""Mutated DICOM conversations against the gateway's acceptor (longer runs:
tests/fuzz/fuzz_dimse.py): every one ends cleanly, nothing malformed reaches the sink."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.fuzz_dimse import converse, seed_conversation
from tests.unit.test_fuzz_deid import _mutations


def test_the_seed_conversation_stores_one_instance() -> None:
    recorder = converse(seed_conversation())
    assert recorder.ends == ["released"] and len(recorder.stored) == 1


@pytest.mark.parametrize(
    "found", sorted((Path(__file__).resolve().parents[1] / "fuzz" / "regressions").glob("dimse-*")), ids=str
)
def test_inputs_the_fuzzer_found_end_cleanly(found: Path) -> None:
    converse(found.read_bytes(), max_instance_bytes=4096)


def test_mutated_conversations_end_cleanly() -> None:
    rng = random.Random(4321)
    seed = seed_conversation()
    ends: set[str] = set()
    for data in _mutations(seed, rng, 400):
        recorder = converse(data, max_instance_bytes=4096)  # raises if the catch-all was reached
        ends.update(recorder.ends)
    assert "aborted" in ends  # the mutations did reach established associations


def test_atheris_target_runs(tmp_path: Path) -> None:
    import atheris  # noqa: F401 (the [test] extra installs it; missing is a failure)

    corpus = tmp_path / "seeds"
    corpus.mkdir()
    (corpus / "conversation").write_bytes(seed_conversation())
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "tests/fuzz/fuzz_dimse.py",
            "-runs=1500",
            "-max_len=8192",
            # libFuzzer's RSS check reads the peak RSS, which Linux carries over exec from this
            # (large) pytest process: bound single allocations instead.
            "-rss_limit_mb=0",
            "-malloc_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr
