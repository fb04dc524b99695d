"""The gateway's object writer: content from parts, O_DIRECT in aligned chunks (or an ordinary
write where the filesystem refuses it), published once under its name, no temp file left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imaging.ingest import commit
from imaging.ingest.commit import write_new_object


def _parts(total: int, cut: int) -> list[bytes | memoryview]:
    data = os.urandom(total)
    view = memoryview(data)
    return [bytes(view[:cut]), view[cut : cut + 7], b"", view[cut + 7 :]]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("total", [1, 4095, 4096, 4097, 3 * 8192 + 5])
def test_parts_are_written_in_order_and_cut_to_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, total: int
) -> None:
    monkeypatch.setattr(commit, "_CHUNK", 8192)  # several chunks, a part across a chunk boundary
    monkeypatch.setattr(commit, "_buffers", type(commit._buffers)())  # a buffer of that size
    monkeypatch.setattr(commit, "_no_direct", set() if direct else {tmp_path.stat().st_dev})
    parts = _parts(total, min(total, 4090))
    target = tmp_path / "object.dcm"
    write_new_object(target, parts)
    assert target.read_bytes() == b"".join(parts)
    assert [p.name for p in tmp_path.iterdir()] == ["object.dcm"]  # no .tmp-* left


def test_a_file_already_at_the_name_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "object.dcm"
    target.write_bytes(b"first")
    write_new_object(target, [b"second"])
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["object.dcm"]
