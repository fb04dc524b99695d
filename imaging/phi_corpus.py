"""A realistic PHI corpus from packaged real DICOM, and an independent residual-PHI scan.

``plant_phi`` writes copies of real files with identifiers planted where today's tools leak
them: private blocks, free-text descriptions, nested sequences, UN elements, the file meta.
``residual_phi`` does not share code with the de-identifier: it searches the output's bytes
for every planted value and for identifying values it reads itself from the input.
``burned_in_instances`` adds images with the identifiers burned into their pixels, and
``residual_pixel_phi`` reads the output's pixels with Tesseract (its own page segmentation and
rendering, not the de-identifier's) and looks for the same values in what it reads.
"""

from __future__ import annotations

import random
import re
import string
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary, generate_uid

__all__ = [
    "PlantedFile",
    "burned_in_instances",
    "identifying_values",
    "plant_phi",
    "residual_phi",
    "residual_pixel_phi",
]

_SURNAMES = ["Hartwell", "Okonkwo", "Lindqvist", "Moreau", "Castellano", "Nakamura", "Brennan", "Kowalski"]
_GIVEN = ["Margaret", "Tobias", "Ingrid", "Rafael", "Sunita", "Evander", "Clementine", "Bartholomew"]
_STREETS = ["Juniper Lane", "Marlowe Avenue", "Quarry Road", "Ashdown Crescent"]
_HOSPITALS = ["Saint Aldhelm Hospital", "Northfield General", "Riverside Clinic Wexford"]
# Values a de-identifier writes itself; an input that already held them is no leak.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
# "PATIENT" is in the code meanings of the method sequence (CID 7050 "Retain Patient
# Characteristics Option"): an input named NAME^PATIENT^NAME does not leak through it.
_OUTPUT_TOKENS = {"ANONYMOUS", "ANONYMIZED", "RADGATE", "YES", "NO", "PATIENT"}


@dataclass
class PlantedFile:
    path: Path
    source: Path
    planted: list[str] = field(default_factory=list)


def _tag(rng: random.Random, n: int = 3) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _plant(ds: Dataset, rng: random.Random) -> list[str]:
    surname = f"{rng.choice(_SURNAMES)}{_tag(rng)}".upper()
    given = f"{rng.choice(_GIVEN)}{_tag(rng)}".upper()
    physician = f"{rng.choice(_SURNAMES)}{_tag(rng)}".upper()
    mrn = f"MRN{rng.randrange(10**7, 10**8)}"
    accession = f"A{rng.randrange(10**8, 10**9)}"
    birth = f"{rng.randrange(1930, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 28):02d}"
    phone = f"+44 20 7946 {rng.randrange(1000, 9999)}"
    street = f"{rng.randrange(10, 999)} {rng.choice(_STREETS)}"
    hospital = f"{rng.choice(_HOSPITALS)} {_tag(rng, 2)}"
    uids = [generate_uid() for _ in range(4)]

    ds.PatientName = f"{surname}^{given}"
    ds.PatientID = mrn
    ds.PatientBirthDate = birth
    ds.AccessionNumber = accession
    ds.PatientAddress = f"{street}, London"
    ds.PatientTelephoneNumbers = phone
    ds.ReferringPhysicianName = f"{physician}^JOHN"
    ds.InstitutionName = hospital
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = uids[:3]
    if "file_meta" in ds.__dict__ or hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = uids[2]
        ds.file_meta.SourceApplicationEntityTitle = f"WS{_tag(rng, 5)}"
    ds.StudyDescription = f"CHEST for {given.title()} {surname.title()} {mrn}"
    ds.ImageComments = (
        f"Seen by Dr. {physician.title()} on {birth[:4]}-{birth[4:6]}-{birth[6:]}; call {phone}"
    )
    ds.AdditionalPatientHistory = f"Lives at {street}. Mother {given.title()} {surname.title()}"
    # Private block with a name (LO) and an ID (UN, as an unknown-VR writer leaves it).
    ds.add_new(0x00330010, "LO", "ACME PHI CARRIER")
    ds.add_new(0x00331010, "LO", f"{surname}^{given}")
    ds.add_new(0x00331011, "UN", mrn.encode())
    # A listed attribute stored as UN (Other Patient IDs), as some gateways do.
    ds[0x00101000] = DataElement(0x00101000, "UN", f"{mrn}X".encode())
    # Nested references and names two levels deep.
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = uids[3]
    inner = Dataset()
    inner.PersonName = f"{physician}^ANNA"
    inner.add_new(0x00451010, "LO", mrn)
    inner.add_new(0x00450010, "LO", "ACME NESTED")
    ref.add_new(0x0040A078, "SQ", Sequence([inner]))  # Author Observer Sequence
    ds.ReferencedStudySequence = Sequence([ref])
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = f"RP{accession}"
    ds.RequestAttributesSequence[0].RequestedProcedureDescription = f"XR for {surname.title()}"
    return [surname, given, physician, mrn, accession, birth, phone, street, hospital, *uids]


def plant_phi(sources: Iterable[Path], out_dir: Path, *, copies: int, seed: int = 0) -> list[PlantedFile]:
    """Write ``copies`` PHI-planted variants of each readable source file into ``out_dir``."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[PlantedFile] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, source in enumerate(sources):
            for copy in range(copies):
                try:
                    ds = dcmread(source)
                    planted = _plant(ds, rng)
                    target = out_dir / f"{number:04d}-{copy:03d}.dcm"
                    ds.save_as(target, enforce_file_format=True)
                except Exception:
                    continue
                written.append(PlantedFile(target, source, planted))
    return written


def identifying_values(data: bytes) -> set[str]:
    """Identifying values read independently from an input: names, IDs, dates, addresses, UIDs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(BytesIO(data), force=True)
    found: set[str] = set()
    code_strings: set[str] = set()  # defined terms (CS) such as PERFUSION are vocabulary, not PHI
    keywords = {
        "PatientID",
        "OtherPatientIDs",
        "AccessionNumber",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "InstitutionName",
        "InstitutionAddress",
        "PatientBirthDate",
        "StudyID",
        "DeviceSerialNumber",
    }

    def walk(node: Dataset) -> None:
        for elem in node:
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item)
                continue
            value = elem.value
            if elem.VR == "CS" and value:
                code_strings.update(
                    str(v).upper() for v in (value if isinstance(value, MultiValue | list) else [value])
                )
            elif elem.VR == "PN" and value:
                found.update(p for p in str(value).replace("=", "^").split("^") if len(p.strip()) >= 4)
            elif elem.VR == "UI" and value:
                found.update(u for u in str(value).split("\\") if u not in UID_dictionary and len(u) > 10)
            elif elem.keyword in keywords and value:
                found.add(str(value))

    try:
        walk(ds)
        if hasattr(ds, "file_meta"):
            value = ds.file_meta.get("MediaStorageSOPInstanceUID")
            if value and value not in UID_dictionary:
                found.add(str(value))
    except Exception:
        pass
    return {
        v.strip()
        for v in found
        if len(v.strip()) >= 4 and v.strip().upper() not in _OUTPUT_TOKENS | code_strings
    }


def residual_phi(output: bytes, values: Iterable[str]) -> list[str]:
    """The values found anywhere in the output's bytes, as whole tokens, case-insensitive.

    Whole tokens: "HERE" (an institution) is not found inside "SPHERE", "00000" not in "000000".
    """
    haystack = output.decode("latin-1")
    found = set()
    for value in values:
        edge = "0-9A-Za-z." if _UID.match(value) else "0-9A-Za-z"  # a UID is a whole dotted value
        pattern = rf"(?<![{edge}]){re.escape(value)}(?![{edge}])"
        if re.search(pattern, haystack, re.IGNORECASE):
            found.add(value)
    return sorted(found)


def burned_in_instances(out_dir: Path, *, copies: int = 1, seed: int = 0) -> list[PlantedFile]:
    """Real packaged images with their header identifiers burned into the pixels (name, ID,
    dates, accession, institution; see :mod:`imaging.burned_in_corpus`)."""
    from imaging.burned_in_corpus import burn_corpus

    out: list[PlantedFile] = []
    for item in burn_corpus(out_dir, copies=copies, seed=seed):
        values = [v for v in item.identifiers.values() if v]
        values.extend(part for part in item.identifiers.get("name", "").split("^") if part)
        out.append(PlantedFile(item.path, Path(item.source), values))
    return out


def _squeeze(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def residual_pixel_phi(output: bytes, values: Iterable[str]) -> list[str]:
    """The values Tesseract can read in the output's pixels (every 4th frame), compared with
    spaces and punctuation removed; a value must be at least 5 characters to count."""
    import numpy as np
    import tesserocr

    from imaging.decoding import decode_pixels
    from imaging.deid.burned_in.ocr import find_tessdata

    wanted = {v: _squeeze(v) for v in values if len(_squeeze(v)) >= 5}
    if not wanted:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(BytesIO(output))
        if "PixelData" not in ds:
            return []
        pixels = decode_pixels(ds)
    frames = pixels[::4] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]
    read: list[str] = []
    with tesserocr.PyTessBaseAPI(path=f"{find_tessdata()}/", psm=tesserocr.PSM.SPARSE_TEXT) as api:
        for frame in frames:
            values_2d = frame.astype(np.float32)
            if values_2d.ndim == 3:
                values_2d = values_2d[..., :3].mean(axis=2)
            low, high = float(values_2d.min()), float(values_2d.max())
            image = np.clip((values_2d - low) * 255.0 / max(high - low, 1e-6), 0, 255).astype(np.uint8)
            for variant in (image, 255 - image):
                height, width = variant.shape
                api.SetImageBytes(np.ascontiguousarray(variant).tobytes(), width, height, 1, width)
                read.append(_squeeze(api.GetUTF8Text() or ""))
    text = "".join(read)
    return sorted(v for v, squeezed in wanted.items() if squeezed in text)
