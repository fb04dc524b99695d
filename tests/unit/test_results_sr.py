"""imaging.results.structured_report: Comprehensive SR (TID 1500) of an AI result; dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from imaging.results import (
    RADGATE_SCHEME,
    AlgorithmIdentity,
    StructuredReportError,
    build_result_report,
    write_secondary_capture,
)
from tests.dicom_factory import pydicom_file

ALGORITHM = AlgorithmIdentity(name="chest-opacity", version="7", method="Grad-CAM")


def _walk(items: pydicom.Sequence) -> list[pydicom.Dataset]:
    found = []
    for item in items:
        found.append(item)
        found.extend(_walk(item.get("ContentSequence", [])))
    return found


def test_results_sr_states_finding_probability_and_algorithm(tmp_path: Path) -> None:
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    report = build_result_report(source, ALGORITHM, finding="opacity", probability=0.8731)
    path = write_secondary_capture(report, tmp_path / "sr.dcm")
    written = pydicom.dcmread(path)
    assert written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert written.StudyInstanceUID == source.StudyInstanceUID
    assert written.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = written.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    items = _walk(written.ContentSequence)
    numbers = [i for i in items if i.ValueType == "NUM"]
    assert [float(n.MeasuredValueSequence[0].NumericValue) for n in numbers] == [pytest.approx(0.8731)]
    texts = {str(i.TextValue) for i in items if i.ValueType == "TEXT"}
    assert {"chest-opacity", "7"} <= texts  # TID 4019 algorithm name and version
    codes = [i.ConceptCodeSequence[0] for i in items if i.ValueType == "CODE"]
    assert any(c.CodingSchemeDesignator == RADGATE_SCHEME and c.CodeValue == "opacity" for c in codes)
    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert done.returncode == 0 and errors == []


def test_results_sr_rejects_bad_probability_and_source() -> None:
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.raises(StructuredReportError):
        build_result_report(source, ALGORITHM, finding="opacity", probability=1.5)
    del source.SOPInstanceUID
    with pytest.raises(StructuredReportError):
        build_result_report(source, ALGORITHM, finding="opacity", probability=0.5)
