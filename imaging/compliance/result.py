"""Outcome types of the compliance check and what each check is evidence for."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["SAFEGUARDS", "CheckResult", "CheckStatus", "ComplianceReport"]

#: What each check is evidence for (stated, not certified).
SAFEGUARDS: dict[str, list[str]] = {
    "store_deidentified": [
        "HIPAA 164.514(b) de-identification",
        "HIPAA 164.312(c)(1) integrity",
        "GDPR Art. 25 data protection by design",
        "GDPR Art. 89(1) pseudonymisation",
    ],
    "quarantine_sealed": ["HIPAA 164.312(a)(2)(iv) encryption", "GDPR Art. 32(1)(a) encryption"],
    "project_key": ["HIPAA 164.312(a)(2)(iv) encryption and key management", "GDPR Art. 32(1)(a)"],
    "pseudonym_map": [
        "HIPAA 164.514(c) re-identification code",
        "GDPR Art. 4(5) pseudonymisation",
        "GDPR Art. 32(1)(a)",
    ],
    "audit_chain": [
        "HIPAA 164.312(b) audit controls",
        "HIPAA 164.312(c)(1) integrity",
        "GDPR Art. 5(2) accountability",
        "GDPR Art. 30 records of processing",
    ],
    "approvals": [
        "HIPAA 164.308(a)(8) evaluation",
        "GDPR Art. 5(2) accountability",
        "GDPR Art. 17 erasure (models trained on erased data)",
    ],
    "retention": ["GDPR Art. 5(1)(e) storage limitation", "HIPAA 164.310(d)(2)(i) disposal"],
    "access_tokens": [
        "HIPAA 164.308(a)(3)(ii)(C) termination",
        "HIPAA 164.308(a)(4) access management",
        "HIPAA 164.312(d) authentication",
        "GDPR Art. 32(1)(b) confidentiality",
    ],
}


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass
class CheckResult:
    name: str
    status: CheckStatus
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "summary": self.summary,
            "evidence": self.evidence,
            "safeguards": SAFEGUARDS.get(self.name, []),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ComplianceReport:
    checked_at: str
    key_id: str
    results: list[CheckResult]
    audit_seq: int | None = None

    @property
    def status(self) -> CheckStatus:
        statuses = {r.status for r in self.results}
        if CheckStatus.FAIL in statuses:
            return CheckStatus.FAIL
        return CheckStatus.WARN if CheckStatus.WARN in statuses else CheckStatus.PASS

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "radgate.compliance-check/1",
            "checked_at": self.checked_at,
            "key_id": self.key_id,
            "status": str(self.status),
            "audit_seq": self.audit_seq,
            "checks": [r.to_dict() for r in self.results],
            "note": "Evidence for the safeguards named; not a certification.",
        }
