"""Table E.1-1 as data: every row loads, options resolve, precedence is protective."""

from __future__ import annotations

import pytest

from imaging.deid import Action, Option, load_profile, load_table
from imaging.deid.errors import ProfileError
from imaging.deid.profile import DeidProfile
from imaging.deid.table import _rows


def test_table_has_every_row_of_the_standard() -> None:
    release, rows = _rows()
    assert release == "2024b"
    assert len(rows) == 621
    assert {r.basic for r in rows} >= {"D", "Z", "X", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U"}


def test_basic_profile_actions() -> None:
    table = load_table()
    assert table.lookup(0x00100010) is Action.PSEUDONYM  # Patient's Name
    assert table.lookup(0x00100020) is Action.PSEUDONYM  # Patient ID
    assert table.lookup(0x00080050) is Action.ZERO  # Accession Number
    assert table.lookup(0x00080018) is Action.UID  # SOP Instance UID
    assert table.lookup(0x00081030) is Action.REMOVE  # Study Description
    assert table.lookup(0x00080020) is Action.ZERO  # Study Date
    assert table.lookup(0x00081010) is Action.DUMMY  # Station Name X/Z/D
    assert table.lookup(0x00081140) is Action.UID  # Referenced Image Sequence X/Z/U*
    assert table.lookup(0x00101010) is Action.REMOVE  # Patient's Age
    assert table.lookup(0x00280010) is None  # Rows: not in the table


def test_repeating_groups_and_private() -> None:
    table = load_table()
    assert table.lookup(0x50020010) is Action.REMOVE  # curve data, any element
    assert table.lookup(0x60023000) is Action.REMOVE  # overlay data in group 6002
    assert table.lookup(0x601E4000) is Action.REMOVE  # overlay comments
    assert table.private is Action.REMOVE
    assert load_table([Option.CLEAN_GRAPHICS]).overlay_data is Action.CLEAN
    assert load_table([Option.RETAIN_SAFE_PRIVATE]).private is Action.CLEAN


@pytest.mark.parametrize(
    ("option", "tag", "expected"),
    [
        (Option.RETAIN_UIDS, 0x00080018, Action.KEEP),
        (Option.RETAIN_DEVICE_IDENTITY, 0x00181000, Action.KEEP),
        (Option.RETAIN_DEVICE_IDENTITY, 0x00080055, Action.CLEAN),  # Station AE Title
        (Option.RETAIN_INSTITUTION_IDENTITY, 0x00080080, Action.KEEP),
        (Option.RETAIN_PATIENT_CHARACTERISTICS, 0x00101010, Action.KEEP),
        (Option.RETAIN_PATIENT_CHARACTERISTICS, 0x00102110, Action.CLEAN),  # Allergies
        (Option.RETAIN_LONGITUDINAL_FULL_DATES, 0x00080020, Action.KEEP),
        (Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, 0x00080020, Action.CLEAN),
        (Option.CLEAN_DESCRIPTORS, 0x00081030, Action.CLEAN),
        (Option.CLEAN_STRUCTURED_CONTENT, 0x0040A730, Action.CLEAN),
        (Option.CLEAN_GRAPHICS, 0x00700001, Action.CLEAN),
    ],
)
def test_each_option_changes_its_rows(option: Option, tag: int, expected: Action) -> None:
    assert load_table([option]).lookup(tag) is expected
    assert load_table().lookup(tag) is not expected


def test_clean_wins_over_keep_when_options_combine() -> None:
    # Date of Last Calibration: device identity K, modified dates C -> cleaned (shifted)
    both = load_table([Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES])
    assert both.lookup(0x00181200) is Action.CLEAN
    assert load_table([Option.RETAIN_DEVICE_IDENTITY]).lookup(0x00181200) is Action.KEEP


def test_cid_7050_codes() -> None:
    assert Option.CLEAN_DESCRIPTORS.code == ("113105", "Clean Descriptors Option")
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.code[0] == "113107"


def test_profiles_load_and_validate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    research = load_profile()
    assert research.label == "research@v1"
    assert set(research.options) == {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.CLEAN_DESCRIPTORS,
    }
    assert load_profile("basic").options == []
    with pytest.raises(ProfileError):
        load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    options = "[retain_longitudinal_full_dates, retain_longitudinal_modified_dates]"
    bad.write_text(f"name: bad\nversion: 1\noptions: {options}\n")
    with pytest.raises(ProfileError, match="mutually exclusive"):
        load_profile(bad)
    with pytest.raises(ValueError):
        DeidProfile.model_validate(
            {"name": "x", "version": 1, "safe_private": [{"group": "0029", "creator": "A", "element": "10"}]}
        )
