"""imaging.results.structured_report builds each report from a per-model content template and
writes the document itself: the result must be what highdicom's ComprehensiveSR constructor makes
of the same tree (same attributes and values, UIDs and timestamps aside), valid (dciodvfy), and
independent of the reports built before and after it."""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset

import imaging.results.structured_report as structured_report
from imaging.results import (
    AlgorithmIdentity,
    ModelApproval,
    build_result_report,
    write_secondary_capture,
)
from tests.dicom_factory import pydicom_file

ALGORITHM = AlgorithmIdentity(name="chest-opacity", version="7", method="classification")
APPROVAL = ModelApproval(model_version="7", artifact_sha256="cd" * 32, status="approved", alias="production")
SERIES_UID = "1.2.826.0.1.3680043.8.498.1"
DEVICE_UID = "1.2.826.0.1.3680043.8.498.2"
#: Values that differ between any two reports: fresh UIDs, timestamps, the meta group length.
VOLATILE = {
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FileMetaInformationGroupLength",
    "UID",  # UIDREF content items: tracking identifiers (device UID is passed)
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "ContributionDateTime",
}


@pytest.fixture(scope="module")
def dx(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    from imaging.demo_data import write_demo_studies

    files = write_demo_studies(
        tmp_path_factory.mktemp("sr-template"), patients=2, images_per_patient=1, size=64
    ).files
    return pydicom.dcmread(files[0])


def _sources(dx: Dataset) -> dict[str, Dataset]:
    return {
        "dx": dx,
        "ct": pydicom.dcmread(pydicom_file("CT_small.dcm")),
        "mr": pydicom.dcmread(pydicom_file("MR_small.dcm")),
        "multiframe": pydicom.dcmread(pydicom_file("emri_small.dcm")),
        "utf8": pydicom.dcmread(get_charset_files("chrX1.dcm")[0]),
        "latin1": pydicom.dcmread(get_charset_files("chrFren.dcm")[0]),
    }


def _flat(dataset: Dataset, path: str = "") -> list[tuple[str, str, str]]:
    """Every element as (path, VR, value), nested items included, volatile values blanked."""
    out: list[tuple[str, str, str]] = []
    for element in dataset:
        where = f"{path}/{element.keyword or element.tag}"
        if element.VR == "SQ":
            out.append((where, "SQ", str(len(element.value))))
            for index, item in enumerate(element.value):
                out.extend(_flat(item, f"{where}[{index}]"))
        else:
            out.append((where, element.VR, "*" if element.keyword in VOLATILE else repr(element.value)))
    return out


def _document(dataset: Dataset) -> list[tuple[str, str, str]]:
    return _flat(dataset.file_meta, "meta") + _flat(dataset)


def _highdicom(source: Dataset, region: np.ndarray | None, **kwargs: Any) -> hd.sr.ComprehensiveSR:
    """The report as highdicom's own constructor builds it from the same content tree."""
    key = structured_report._TemplateKey(
        ALGORITHM, kwargs.get("approval"), "opacity", kwargs.get("positive"), kwargs.get("calibration")
    )
    groups = []
    if region is not None:
        template = structured_report._template(key)
        groups.append(
            structured_report._region_group(
                source, region, "opacity", template.finding, template.algorithm_id, template.evaluations
            )
        )
    tree = structured_report._content_tree(
        source, key, probability=kwargs["probability"], device_uid=DEVICE_UID, region_groups=groups
    )
    report = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=tree[0],
        series_instance_uid=SERIES_UID,
        series_number=9902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=ALGORITHM.manufacturer,
        series_description=structured_report._headline(
            "opacity", kwargs["probability"], kwargs.get("positive"), ALGORITHM
        ),
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = structured_report.RADGATE_SCHEME
    scheme.CodingSchemeName = "RadGate model labels"
    scheme.CodingSchemeResponsibleOrganization = ALGORITHM.manufacturer
    report.CodingSchemeIdentificationSequence = [scheme]
    return report


CASES: list[dict[str, Any]] = [
    {"probability": 0.8731},
    {"probability": 0.12, "positive": False, "approval": APPROVAL},
    {
        "probability": 0.5,
        "positive": True,
        "approval": APPROVAL,
        "calibration": "temperature scaling, T=0.84",
    },
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_report_is_highdicoms_document_of_the_same_tree(dx: Dataset, case: int) -> None:
    kwargs = CASES[case]
    for name, source in _sources(dx).items():
        fast = build_result_report(
            source,
            ALGORITHM,
            finding="opacity",
            series_instance_uid=SERIES_UID,
            device_uid=DEVICE_UID,
            **kwargs,
        )
        assert _document(fast) == _document(_highdicom(source, None, **kwargs)), name
        # and written the same way: the same Part 10 elements once read back
        written = pydicom.dcmread(BytesIO(_encode(fast)))
        assert _document(written) == _document(
            pydicom.dcmread(BytesIO(_encode(_highdicom(source, None, **kwargs))))
        )


def test_report_with_a_region_is_highdicoms_document(dx: Dataset) -> None:
    region = np.array([[20, 10], [40, 10], [40, 30], [20, 30]], dtype=np.float64)
    kwargs: dict[str, Any] = {"probability": 0.7, "positive": True, "approval": APPROVAL}
    fast = build_result_report(
        dx, ALGORITHM, finding="opacity", series_instance_uid=SERIES_UID, device_uid=DEVICE_UID,
        region=region, **kwargs,
    )  # fmt: skip
    assert _document(fast) == _document(_highdicom(dx, region, **kwargs))


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_reports_do_not_leak_into_each_other(dx: Dataset) -> None:
    ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    first = build_result_report(
        dx, ALGORITHM, finding="opacity", probability=0.91, positive=True, approval=APPROVAL
    )
    before = _encode(first)
    second = build_result_report(
        ct, ALGORITHM, finding="opacity", probability=0.07, positive=True, approval=APPROVAL
    )
    assert _encode(first) == before  # building another report changed nothing of the first
    back = pydicom.dcmread(BytesIO(_encode(second)))
    values = [str(v) for v in _flat(back)]
    assert not any(str(dx.SOPInstanceUID) in v or str(dx.PatientID) in v for v in values)
    (group,) = cast(Any, second.content).get_image_measurement_groups()
    (measurement,) = group.get_measurements()
    assert measurement.value == pytest.approx(0.07)
    assert [i.referenced_sop_instance_uid for i in group.source_images] == [ct.SOPInstanceUID]
    tracking = {
        str(item.UID)
        for report in (first, second)
        for item in _items(report.ContentSequence)
        if item.ValueType == "UIDREF"
    }
    assert len(tracking) == 4  # a device UID and a tracking UID of each report, none shared


def _items(items: pydicom.Sequence) -> list[Dataset]:
    found = []
    for item in items:
        found.append(item)
        found.extend(_items(item.get("ContentSequence", [])))
    return found


def test_content_tree_is_built_once_per_model(dx: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-report work is filling values: highdicom builds the tree once for the model, and its
    document constructor (deep copy of the tree, search for references) is not run per report."""
    structured_report._template.cache_clear()
    built: list[object] = []
    real = structured_report._content_tree

    def counting(*args: Any, **kwargs: Any) -> hd.sr.MeasurementReport:
        built.append(args)
        return real(*args, **kwargs)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("highdicom's SR constructor ran for a report")

    monkeypatch.setattr(structured_report, "_content_tree", counting)
    monkeypatch.setattr(hd.sr.ComprehensiveSR, "__init__", refused)
    for probability in (0.1, 0.6, 0.9):
        build_result_report(dx, ALGORITHM, finding="opacity", probability=probability, approval=APPROVAL)
    assert len(built) == 1
    build_result_report(dx, ALGORITHM, finding="effusion", probability=0.4, approval=APPROVAL)
    assert len(built) == 2  # another finding, another template


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools not installed")
def test_reports_of_every_source_pass_dciodvfy(tmp_path: Path, dx: Dataset) -> None:
    for name, source in _sources(dx).items():
        report = build_result_report(
            source, ALGORITHM, finding="opacity", probability=0.42, positive=False, approval=APPROVAL
        )
        path = write_secondary_capture(report, tmp_path / f"{name}.dcm")
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], (name, errors)
