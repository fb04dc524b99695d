"""values.raw_text gives what pydicom decodes (the engine reads values that way, undecoded)."""

from __future__ import annotations

import pytest
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.tag import Tag

from imaging.corpus import packaged_dicom_files
from imaging.deid.values import RAW_CODECS, raw_text, text_of
from imaging.pipeline import quiet_pydicom

CASES = [
    ("UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
    ("UI", b"1.2.3\\4.5.6 "),
    ("CS", b"ORIGINAL\\PRIMARY\\AXIAL "),
    ("CS", b" YES "),
    ("DA", b"20230105"),
    ("DA", b"20230105\\20230106  "),
    ("TM", b"101512.5 "),
    ("DT", b"20230105101510.000000+0100 "),
    ("AS", b"061Y"),
    ("LO", b"CT CHEST \\ HEAD  "),
    ("LO", b" leading kept "),
    ("SH", b"AXIAL 5mm\x00"),
    ("LO", "Befund für Müller ".encode("latin-1")),
    ("LT", b"free text \\ with backslash  \x00"),
    ("ST", b""),
    ("UT", b"   "),
    ("PN", b"DOE^JOHN\\ROE^JANE "),
    ("PN", "MÜLLER^JÜRGEN=".encode("latin-1")),
    ("PN", b"Yamada^Tarou=\x00"),
    ("PN", b" DOE^^^ "),
]


def _pydicom_text(vr: str, value: bytes, charset: str) -> str:
    raw = RawDataElement(Tag(0x00100010), vr, len(value), value, 0, False, True)
    encoding = [python_encoding[charset]] if charset else None
    return text_of(convert_raw_data_element(raw, encoding=encoding, ds=Dataset()).value)


@pytest.mark.parametrize(("vr", "value"), CASES)
@pytest.mark.parametrize("charset", ["", "ISO_IR 100", "ISO_IR 192"])
def test_same_text_as_pydicom(vr: str, value: bytes, charset: str) -> None:
    quiet_pydicom()
    text = raw_text(value, vr, RAW_CODECS[charset])
    if text is None:  # left to pydicom: bytes the codec cannot decode, name component groups
        assert charset == "ISO_IR 192" or b"=" in value
        return
    assert text == _pydicom_text(vr, value, charset)


def test_other_vrs_and_bad_bytes_are_left_to_pydicom() -> None:
    assert raw_text(b"1.5 ", "DS", "latin-1") is None
    assert raw_text(b"\x01\x00", "US", "latin-1") is None
    assert raw_text(b"AE TITLE", "AE", "latin-1") is None
    assert raw_text("Müller".encode("latin-1"), "LO", "utf-8") is None


def test_every_packaged_value_reads_as_pydicom_reads_it() -> None:
    quiet_pydicom()
    compared = 0

    def walk(ds: Dataset, codec: str | None) -> None:
        nonlocal compared
        if 0x00080005 in ds._dict:
            codec = RAW_CODECS.get(text_of(ds[0x00080005].value).strip().upper())
        for tag in list(ds._dict):
            raw = ds._dict[tag]
            if isinstance(raw, RawDataElement) and raw.value is not None and codec and not tag.is_private:
                try:
                    vr = raw.VR or dictionary_VR(tag)
                except KeyError:
                    vr = None
                text = raw_text(raw.value, vr, codec) if vr else None
                if text is not None:
                    assert text == text_of(ds[tag].value), (str(tag), vr)
                    compared += 1
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item, codec)

    for path in packaged_dicom_files()[:120]:
        try:
            ds = dcmread(path, force=True, defer_size=64 * 1024)
        except Exception:  # not DICOM, or broken on purpose: not what this test is about
            continue
        try:
            walk(ds, "latin-1")
        except (ValueError, TypeError, KeyError, NotImplementedError):
            continue  # a value pydicom itself cannot decode
    assert compared > 1000
