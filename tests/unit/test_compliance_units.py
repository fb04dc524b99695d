"""Fast checks of the compliance thresholds file and the per-object verifier."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from governance.catalog import Instance
from imaging.compliance import ComplianceConfigError, load_thresholds
from imaging.compliance.scan import _check_one


def test_thresholds_file_loads_and_rejects_unknown_keys(tmp_path: Path) -> None:
    thresholds = load_thresholds()
    assert thresholds.quality.near_duplicate_distance >= 0
    assert thresholds.compliance.max_admins >= 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nquality:\n  no_such_threshold: 3\n")
    with pytest.raises(ComplianceConfigError):
        load_thresholds(bad)
    with pytest.raises(ComplianceConfigError):
        load_thresholds(tmp_path / "missing.yaml")


def _object(**extra: object) -> tuple[Instance, bytes]:
    ds = Dataset()
    ds.PatientID = "RGPSEUDO"
    ds.StudyInstanceUID = "2.25.1"
    ds.SOPInstanceUID = "2.25.2"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.PatientIdentityRemoved = "YES"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113100", "DCM", "Basic"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.2")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    inst = Instance(patient_pseudonym="RGPSEUDO", study_instance_uid="2.25.1", sop_instance_uid="2.25.2")
    return inst, buffer.getvalue()


def test_verifier_passes_a_clean_object_and_names_each_problem() -> None:
    inst, data = _object()
    assert dict(_check_one(inst, data, [], set())) == {}
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.840.113619.2.55.3.1234"  # a vendor root: an original UID
    inst, data = _object(ReferencedImageSequence=Sequence([ref]), PatientIdentityRemoved="NO")
    assert dict(_check_one(inst, data, ["SMITHSON"], set())) == {"foreign-uid": 1, "no-marker": 1}
    inst, data = _object(ImageComments="seen by SMITHSON")
    assert dict(_check_one(inst, data, ["SMITHSON"], set())) == {"residual-phi": 1}
    assert dict(_check_one(inst, b"not dicom", [], set())) == {"unparseable": 1}
