"""An instance sent again gets the sampling decision it got the first time: same input, same output.

A CT/MR series is screened in full on its sampled slices (the first of the series, then every
Nth) and checked or skipped on the others, and only a slice screened in full and verified gets
BurnedInAnnotation NO. Counting a resend as the series' next slice gave the first slice, sent
again after a lost store, the treatment of a later one: another output for the same input.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.dicom_factory import encode, make_ct


@pytest.fixture
def research(radgate_home: Path) -> tuple[object, object, object]:
    from governance.keys import load_project_key
    from imaging.deid import Deidentifier, load_profile

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    profile, key = load_profile("research"), load_project_key()
    assert profile.burned_in.mode == "screen"
    return Deidentifier(profile, key), key, profile


def test_a_resent_first_slice_is_screened_in_full_again(research: tuple[object, object, object]) -> None:
    from imaging.pipeline import Outcome, process_bytes

    engine, key, profile = research
    series, study = generate_uid(), generate_uid()
    slices = [
        encode(make_ct(InstanceNumber=n + 1, SeriesInstanceUID=series, StudyInstanceUID=study))
        for n in range(3)
    ]
    first = [process_bytes(data, engine, key, profile) for data in slices]  # type: ignore[arg-type]
    assert all(r.outcome is Outcome.DEIDENTIFIED for r in first)
    screens = [r.record.pixel_screen or {} for r in first if r.record is not None]
    assert screens[0]["screened"] and screens[0]["verified"]
    assert not screens[1]["verified"]  # a later slice of the series: not screened in full
    again = process_bytes(slices[0], engine, key, profile)  # type: ignore[arg-type]
    assert again.record is not None and (again.record.pixel_screen or {}).get("verified")
    assert again.output == first[0].output
    # and a later slice sent again keeps its own treatment
    later = process_bytes(slices[1], engine, key, profile)  # type: ignore[arg-type]
    assert later.output == first[1].output
