"""The fast Part 10 encoder writes exactly the bytes pydicom's ``save_as`` writes, or defers to it."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from governance.keys import ProjectKey
from imaging.corpus import packaged_dicom_files
from imaging.deid import Deidentifier, DeidProfile, Option, QuarantineError, load_profile
from imaging.deid.profile import (
    BurnedInMode,
    BurnedInPolicy,
    PixelCleaningRule,
    SafePrivate,
    UnlistedPolicy,
    UnlistedText,
    UnlistedUnknown,
)
from imaging.dicomio import _encode_part10, _Unsupported, encode_instance, encode_reference, parse_instance
from imaging.pipeline import quiet_pydicom
from tests.dicom_factory import encode, make_ct

KEY = ProjectKey(b"\x07" * 32)
# Every option column and policy branch at once: safe private kept, UIDs and dates retained,
# unknown attributes kept, ultrasound pixels cleaned by device rule (decoded and rewritten). Not
# screened by OCR (the research profile screens every file of the corpus already; an empty
# quarantine rule lets every instance through to the encoder).
WIDE = DeidProfile(
    name="wide",
    version=1,
    options=[
        Option.RETAIN_SAFE_PRIVATE,
        Option.RETAIN_UIDS,
        Option.RETAIN_DEVICE_IDENTITY,
        Option.RETAIN_INSTITUTION_IDENTITY,
        Option.RETAIN_LONGITUDINAL_FULL_DATES,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.CLEAN_GRAPHICS,
    ],
    safe_private=[
        SafePrivate(group=0x0029, creator="SIEMENS CSA HEADER", element=0x10),
        SafePrivate(group=0x0043, creator="GEMS_PARM_01", element=0x39),
    ],
    unlisted=UnlistedPolicy(text=UnlistedText.REMOVE, unknown=UnlistedUnknown.KEEP),
    burned_in=BurnedInPolicy(
        mode=BurnedInMode.QUARANTINE,
        quarantine_modalities=[],
        quarantine_sop_classes=[],
        pixel_cleaning=[PixelCleaningRule(modality="US", rectangles=[(0, 0, 16, 8)])],
    ),
)


def _same_bytes(ds: Dataset) -> bool:
    """True when the fast path ran (and matched pydicom); False when it defers to pydicom."""
    try:
        fast = _encode_part10(ds)
    except _Unsupported:
        return False
    assert fast == encode_reference(ds)
    assert encode_instance(ds) == fast
    return True


@pytest.fixture(scope="module")
def real_files() -> list[bytes]:
    files = packaged_dicom_files()
    if len(files) < 100:
        pytest.fail("packaged DICOM corpus missing: pip install pydicom-data deid-data")
    return [path.read_bytes() for path in files]


def test_deidentified_real_files_encode_like_pydicom(real_files: list[bytes]) -> None:
    quiet_pydicom()
    warnings.simplefilter("ignore")
    engines = [Deidentifier(load_profile("research"), KEY), Deidentifier(WIDE, KEY)]
    fast = deferred = 0
    for data in real_files:
        for engine in engines:
            try:
                ds = parse_instance(data, max_bytes=1 << 30)
                engine.deidentify(ds)
            except QuarantineError:
                continue
            meta_before = [(e.tag, e.value) for e in ds.file_meta]
            if _same_bytes(ds):
                fast += 1
            else:
                deferred += 1  # big endian, deflated, or raw elements pydicom cannot copy as read
            assert [(e.tag, e.value) for e in ds.file_meta] == meta_before  # the caller's meta is kept
    assert fast > 200  # the corpus: implicit, explicit, compressed, nested, private, UN, odd lengths
    assert 0 < deferred < fast // 5


def test_nested_undefined_lengths_new_items_and_odd_values() -> None:
    for syntax in (None, ImplicitVRLittleEndian):
        ds = make_ct()
        if syntax is not None:
            ds.file_meta.TransferSyntaxUID = syntax
        inner = Dataset()
        inner.CodeValue = "T-D3000"
        inner.add_new(0x00091010, "UN", b"\x01\x02\x03")  # odd UN value: written unpadded
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3.4.5"  # odd UI: NUL padded
        item.add_new(0x00291010, "OB", b"\x00\x01\x02")  # odd OB: NUL padded
        item.ConceptNameCodeSequence = Sequence([inner])
        ds.ReferencedImageSequence = Sequence([item, Dataset()])
        ds.ReferencedImageSequence.is_undefined_length = True
        ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
        ds.ImageComments = "Ünïcode text is encoded by pydicom"
        ds.add_new(0x00180050, "DS", "2.5")
        read = dcmread(BytesIO(encode(ds)))
        assert _same_bytes(read)  # as read: raw elements copied through
        read.ReferencedImageSequence[0].ConceptNameCodeSequence.append(Dataset())
        read.ReferencedImageSequence[0].ConceptNameCodeSequence[1].CodeMeaning = "new item"
        read.Rows, read.PatientName, read.SliceThickness = 8, "CHANGED^NAME", "3.0"
        assert _same_bytes(read)  # decoded, changed and new elements


def test_deidentified_instance_encodes_like_pydicom_with_pixels_untouched() -> None:
    src = make_ct()
    src.add_new(0x00290010, "LO", "ACME SAFE")
    src.add_new(0x00291010, "DS", "1.5")  # safe private: kept
    src.add_new(0x00291011, "LO", "DOE^JANE")  # private name: removed
    item = Dataset()
    item.PersonName = "DOE^JANE"
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    item.ObservationDateTime = "20230105101500"
    src.add_new(0x0040A730, "SQ", Sequence([item]))  # nested: UID, name and date inside
    profile = load_profile("research").model_copy(
        update={
            "options": [*load_profile("research").options, Option.RETAIN_SAFE_PRIVATE],
            "safe_private": [SafePrivate(group=0x0029, creator="ACME SAFE", element=0x10)],
        }
    )
    ds = parse_instance(encode(src), max_bytes=1 << 20)
    Deidentifier(profile, KEY).deidentify(ds)
    assert _same_bytes(ds)
    out = dcmread(BytesIO(encode_instance(ds)))
    assert out.PixelData == src.PixelData
    assert out[0x00291010].value == "1.5" and 0x00291011 not in out
    nested = out[0x0040A730][0]
    assert nested.ReferencedSOPInstanceUID == out.SOPInstanceUID != src.SOPInstanceUID
    assert nested.PersonName == "ANONYMOUS"
    assert out.StudyDate != src.StudyDate and len(out.StudyDate) == 8
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


@pytest.mark.parametrize(("name", "fast"), [("ExplVR_BigEnd.dcm", True), ("image_dfl.dcm", False)])
def test_big_endian_is_written_as_read_and_deflated_defers_to_pydicom(name: str, fast: bool) -> None:
    quiet_pydicom()
    path = next(p for p in packaged_dicom_files() if p.name == name)
    ds = parse_instance(Path(path).read_bytes(), max_bytes=1 << 30)
    assert _same_bytes(ds) is fast
    assert encode_instance(ds) == encode_reference(ds)


def test_big_endian_deidentified_new_elements_match_pydicom() -> None:
    # new numbers, texts, code items and an emptied sequence, in a big endian dataset
    quiet_pydicom()
    for name in ("MR_small_bigendian.dcm", "rtdose_expb.dcm"):
        path = next(p for p in packaged_dicom_files() if p.name == name)
        ds = parse_instance(Path(path).read_bytes(), max_bytes=1 << 30)
        Deidentifier(WIDE, KEY).deidentify(ds)
        ds.add_new(0x00181310, "US", [0, 64, 64, 0])  # AcquisitionMatrix: a multi-valued number
        ds.add_new(0x00280034, "IS", [1, 1])  # PixelAspectRatio
        ds.add_new(0x00209241, "FL", 0.5)  # NominalCardiacTriggerTimePriorToRPeak
        ds.ReferencedImageSequence = []
        assert ds.original_encoding == (False, False)
        assert _same_bytes(ds)
