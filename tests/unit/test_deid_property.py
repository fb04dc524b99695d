"""Property-based: plant identifiers in random places; none may survive de-identification."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from governance.keys import ProjectKey
from imaging.deid import Deidentifier, load_profile
from imaging.phi_corpus import residual_phi
from tests.dicom_factory import encode, make_ct

ENGINE = Deidentifier(load_profile("research"), ProjectKey(b"\x07" * 32))
BASIC = Deidentifier(load_profile("basic"), ProjectKey(b"\x07" * 32))

names = st.from_regex(r"[A-Z][a-z]{4,9}[qxz][a-z]{1,3}", fullmatch=True)  # unusual, not English words
ids = st.from_regex(r"[A-Z]{2}[0-9]{6,9}", fullmatch=True)
dates = st.dates(min_value=dt.date(1920, 1, 1), max_value=dt.date(2025, 12, 31)).map(
    lambda d: d.strftime("%Y%m%d")
)

# Places a planted value may go: (kind, tag, vr)
FREE_TEXT = [0x00081030, 0x0008103E, 0x00204000, 0x001021B0, 0x00324000, 0x00181030, 0x00400254]
PLACES = st.sampled_from(
    ["private_lo", "private_un", "nested_pn", "nested_text", "un_listed", "free_text", "other_ids"]
)


def _nest(depth: int, leaf: Dataset) -> Sequence:
    node = leaf
    for _ in range(depth):
        parent = Dataset()
        parent.add_new(0x0040A730, "SQ", Sequence([node]))  # Content Sequence
        node = parent
    return Sequence([node])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    surname=names,
    given_name=names,
    patient_id=ids,
    birth=dates,
    places=st.lists(st.tuples(PLACES, st.integers(0, 4), st.sampled_from(FREE_TEXT)), min_size=1, max_size=6),
    basic=st.booleans(),
)
def test_planted_phi_never_survives(
    surname: str,
    given_name: str,
    patient_id: str,
    birth: str,
    places: list[tuple[str, int, int]],
    basic: bool,
) -> None:
    ds = make_ct(PatientName=f"{surname}^{given_name}", PatientID=patient_id, PatientBirthDate=birth)
    text = f"{given_name} {surname} ({patient_id}) born {birth[:4]}-{birth[4:6]}-{birth[6:]}"
    for n, (place, depth, tag) in enumerate(places):
        if place == "private_lo":
            ds.add_new(0x00110010 + 0x20000 * n, "LO", "VENDOR")
            ds.add_new(0x00111001 + 0x20000 * n, "LO", text[:64])
        elif place == "private_un":
            ds.add_new(0x00130010 + 0x20000 * n, "LO", "VENDOR")
            ds.add_new(0x00131001 + 0x20000 * n, "UN", patient_id.encode())
        elif place == "nested_pn":
            leaf = Dataset()
            leaf.PersonName = f"{surname}^{given_name}"
            ds.add_new(0x0040A730, "SQ", _nest(depth, leaf))
        elif place == "nested_text":
            leaf = Dataset()
            leaf.TextValue = text
            ds.add_new(0x0040A730, "SQ", _nest(depth, leaf))
        elif place == "un_listed":
            ds.add_new(0x00101000, "UN", patient_id.encode())  # Other Patient IDs, as UN
        elif place == "free_text":
            from pydicom.datadict import dictionary_VR

            ds.add_new(tag, dictionary_VR(tag), text[:64] if dictionary_VR(tag) != "SH" else patient_id)
        elif place == "other_ids":
            ds.OtherPatientIDs = patient_id
    original = dcmread(BytesIO(encode(ds)))
    (BASIC if basic else ENGINE).deidentify(original)
    output = encode(original)
    planted = [surname, given_name, patient_id, birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"]
    assert residual_phi(output, planted) == []
