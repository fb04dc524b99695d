"""Compliance evidence: the continuous compliance check and patient erasure (GDPR Art. 17).

- ``run_compliance_check(principal, sample=...)`` -> :class:`ComplianceReport` (pass/warn/fail
  per check, with evidence and the safeguards it supports; audited);
- ``plan_erasure(patient_id, principal=broker)`` -> :class:`ErasurePlan` (dry run; audited);
- ``erase_patient(patient_id, principal=broker, approver=admin, reason=...)``;
- ``superseded_by(dataset_version_id)``: training should refuse a superseded version;
- thresholds: ``load_thresholds()`` (``configs/compliance/thresholds.yaml``).

CLI: ``radgate compliance check`` and ``radgate erase``.
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from imaging.compliance.checks import (
        CHECK_ROLES,
        SAFEGUARDS,
        CheckResult,
        CheckStatus,
        ComplianceReport,
        run_compliance_check,
    )
    from imaging.compliance.config import (
        ComplianceConfigError,
        ComplianceThresholds,
        QualityThresholds,
        Thresholds,
        load_thresholds,
    )
    from imaging.compliance.erasure import (
        ERASURE_REVIEW_TAG,
        ErasureError,
        ErasurePlan,
        erase_patient,
        list_erasures,
        plan_erasure,
        superseded_by,
    )
    from imaging.compliance.models import DatasetSupersession, ErasureRecord
    from imaging.compliance.scan import InstanceFinding, ScanResult, scan_store

__all__ = [
    "CHECK_ROLES",
    "ERASURE_REVIEW_TAG",
    "SAFEGUARDS",
    "CheckResult",
    "CheckStatus",
    "ComplianceConfigError",
    "ComplianceReport",
    "ComplianceThresholds",
    "DatasetSupersession",
    "ErasureError",
    "ErasurePlan",
    "ErasureRecord",
    "InstanceFinding",
    "QualityThresholds",
    "ScanResult",
    "Thresholds",
    "erase_patient",
    "list_erasures",
    "load_thresholds",
    "plan_erasure",
    "run_compliance_check",
    "scan_store",
    "superseded_by",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
