"""The continuous compliance check: one call, a pass/warn/fail table with evidence.

``run_compliance_check(principal)`` re-scans the store (a sample or all), checks quarantine
sealing, the project key (permissions, age), the pseudonym map (sealed under the current
key), the audit chain and its anchors, approvals (served without a valid approval, near
expiry, flagged by an erasure) and access tokens (unused, too many admins), then writes one
audit entry ``compliance.check``. Each check names the HIPAA Security Rule safeguards and GDPR
articles it supports (evidence for them, not a certification).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from governance.audit import AuditLog, record
from governance.auth import Principal, Role, require_role
from governance.catalog import Instance, Pseudonym, QuarantineRecord, open_catalog
from governance.keyring import RECORD_QUARANTINE
from governance.keys import KeyError_, load_project_key
from governance.settings import Settings, get_settings
from imaging.compliance.config import ComplianceThresholds, load_thresholds
from imaging.compliance.governance_checks import (
    approvals_check,
    audit_check,
    mlflow_client_if_present,
    tokens_check,
)
from imaging.compliance.result import SAFEGUARDS, CheckResult, CheckStatus, ComplianceReport
from imaging.compliance.scan import scan_store
from imaging.store import ContentStore

__all__ = [
    "CHECK_ROLES",
    "SAFEGUARDS",
    "CheckResult",
    "CheckStatus",
    "ComplianceReport",
    "run_compliance_check",
]

CHECK_ROLES = (Role.AUDITOR, Role.ADMIN, Role.DATA_STEWARD)


def _store(settings: Settings, t: ComplianceThresholds, sample: int | None, seed: int | None) -> CheckResult:
    key = load_project_key(settings, create=False)
    with open_catalog(settings).session() as session:
        scan = scan_store(
            session,
            ContentStore.from_settings(settings),
            key,
            sample=t.sample_size if sample is None else sample,
            seed=seed,
        )
    bad = scan.failing_instances
    evidence = {
        "instances": scan.total,
        "scanned": scan.scanned,
        "failing_instances": bad,
        "problems": scan.problems(),
        "failing": sorted({f.sha256 for f in scan.findings})[:50],
    }
    if bad:
        return CheckResult(
            "store_deidentified",
            CheckStatus.FAIL,
            f"{bad} of {scan.scanned} scanned instance(s) not de-identified or not intact",
            evidence,
        )
    return CheckResult(
        "store_deidentified",
        CheckStatus.PASS,
        f"{scan.scanned} of {scan.total} instance(s) re-scanned: markers, private tags, "
        "UIDs and sealed originals all clean",
        evidence,
    )


def _quarantine(settings: Settings) -> CheckResult:
    key = load_project_key(settings, create=False)
    problems: dict[str, int] = {}
    with open_catalog(settings).session() as session:
        records = list(
            session.scalars(select(QuarantineRecord).where(QuarantineRecord.released_at.is_(None)))
        )
    for rec in records:
        path = Path(rec.path)
        if path.suffix != ".sealed":
            continue  # nothing was kept (input unreadable): only the note exists
        try:
            key.unseal(path.read_bytes(), rec.input_sha256.encode(), record=RECORD_QUARANTINE)
        except OSError:
            problems["missing"] = problems.get("missing", 0) + 1
        except KeyError_:
            problems["not-sealed-under-current-key"] = problems.get("not-sealed-under-current-key", 0) + 1
    folder = settings.quarantine_dir
    clear = [p.name[:12] for p in folder.glob("*") if p.is_file() and p.suffix not in {".sealed", ".json"}]
    if clear:
        problems["unsealed-files"] = len(clear)
    evidence = {"records": len(records), "problems": problems}
    if problems:
        return CheckResult(
            "quarantine_sealed", CheckStatus.FAIL, f"quarantine problems: {problems}", evidence
        )
    return CheckResult(
        "quarantine_sealed",
        CheckStatus.PASS,
        f"{len(records)} quarantined input(s), all sealed under the current key",
        evidence,
    )


def _key(settings: Settings, t: ComplianceThresholds, now: datetime) -> CheckResult:
    try:
        key = load_project_key(settings, create=False)
    except KeyError_ as exc:
        return CheckResult("project_key", CheckStatus.FAIL, str(exc), {"present": False})
    if settings.project_key is not None:
        return CheckResult(
            "project_key",
            CheckStatus.PASS,
            "key from RADGATE_PROJECT_KEY (secret manager): no file to check",
            {"present": True, "source": "environment", "key_id": key.key_id},
        )
    path = settings.resolved_key_file
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    dir_mode = stat.S_IMODE(path.parent.stat().st_mode)
    age_days = (now.timestamp() - st.st_mtime) / 86400
    evidence = {
        "present": True,
        "source": "file",
        "key_id": key.key_id,
        "mode": oct(mode),
        "dir_mode": oct(dir_mode),
        "owner_uid": st.st_uid,
        "age_days": round(age_days, 1),
        "max_age_days": t.max_key_age_days,
    }
    if mode & 0o077 or dir_mode & 0o022:
        return CheckResult(
            "project_key",
            CheckStatus.FAIL,
            f"key file is accessible to others (mode {oct(mode)}, folder {oct(dir_mode)})",
            evidence,
        )
    if st.st_uid != os.getuid():
        return CheckResult("project_key", CheckStatus.WARN, "key file is owned by another user", evidence)
    if age_days > t.max_key_age_days:
        return CheckResult(
            "project_key",
            CheckStatus.WARN,
            f"key is {age_days:.0f} days old (rotate after {t.max_key_age_days})",
            evidence,
        )
    return CheckResult("project_key", CheckStatus.PASS, f"key file 0600, {age_days:.0f} days old", evidence)


def _map(settings: Settings) -> CheckResult:
    key = load_project_key(settings, create=False)
    with open_catalog(settings).session() as session:
        rows = int(session.scalar(select(func.count()).select_from(Pseudonym)) or 0)
        other = int(
            session.scalar(select(func.count()).select_from(Pseudonym).where(Pseudonym.key_id != key.key_id))
            or 0
        )
        inst_other = int(
            session.scalar(select(func.count()).select_from(Instance).where(Instance.key_id != key.key_id))
            or 0
        )
        sample = list(
            session.scalars(
                select(Pseudonym).where(Pseudonym.key_id == key.key_id).order_by(func.random()).limit(50)
            )
        )
    bad = 0
    for row in sample:
        try:
            key.unseal(row.sealed_original, row.lookup.encode())
        except KeyError_:
            bad += 1
    evidence = {
        "entries": rows,
        "under_other_key": other,
        "instances_under_other_key": inst_other,
        "unsealed_sample": len(sample),
        "unsealable": bad,
        "key_id": key.key_id,
    }
    if other or bad or inst_other:
        return CheckResult(
            "pseudonym_map",
            CheckStatus.FAIL,
            f"{other} map entr(ies) and {inst_other} instance(s) under another key, "
            f"{bad} of {len(sample)} sampled entries do not decrypt",
            evidence,
        )
    return CheckResult(
        "pseudonym_map", CheckStatus.PASS, f"{rows} sealed original(s), all under key {key.key_id}", evidence
    )


def _retention(settings: Settings, t: ComplianceThresholds, now: datetime) -> CheckResult:
    from imaging.compliance.retention import retention_findings, retention_violations

    found = retention_findings(settings, now, t.max_quarantine_age_days)
    violations = retention_violations(found)
    if violations:
        return CheckResult(
            "retention",
            CheckStatus.FAIL,
            "kept past their limit: " + ", ".join(f"{name} {count}" for name, count in violations.items()),
            found,
        )
    if found["quarantine_older_than_limit"]:
        return CheckResult(
            "retention",
            CheckStatus.WARN,
            f"{found['quarantine_older_than_limit']} quarantined input(s) older than "
            f"{t.max_quarantine_age_days} days: review, release or erase them",
            found,
        )
    return CheckResult("retention", CheckStatus.PASS, "nothing identifying kept past its limit", found)


def run_compliance_check(
    principal: Principal,
    *,
    sample: int | None = None,
    seed: int | None = None,
    now: datetime | None = None,
    thresholds: ComplianceThresholds | None = None,
    settings: Settings | None = None,
) -> ComplianceReport:
    """Every check, then one ``compliance.check`` audit entry. ``sample=0`` re-scans all instances;
    ``now`` evaluates approvals and ages as of another time (e.g. next month)."""
    require_role(principal, *CHECK_ROLES)
    settings = settings or get_settings()
    t = thresholds or load_thresholds().compliance
    now = now or datetime.now(UTC)
    client = mlflow_client_if_present(settings)
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("store_deidentified", lambda: _store(settings, t, sample, seed)),
        ("quarantine_sealed", lambda: _quarantine(settings)),
        ("project_key", lambda: _key(settings, t, now)),
        ("pseudonym_map", lambda: _map(settings)),
        ("audit_chain", lambda: audit_check(settings, t, now, client)),
        ("approvals", lambda: approvals_check(t, now, client)),
        ("retention", lambda: _retention(settings, t, now)),
        ("access_tokens", lambda: tokens_check(settings, t, now)),
    ]
    results = []
    for name, step in steps:
        start = time.perf_counter()
        try:
            result = step()
        except KeyError_ as exc:
            result = CheckResult(name, CheckStatus.FAIL, f"project key problem: {exc}")
        result.seconds = time.perf_counter() - start
        results.append(result)
    key_id = load_project_key(settings, create=False).key_id
    report = ComplianceReport(now.isoformat(timespec="seconds"), key_id, results)
    digest = hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    record(
        principal.name,
        "compliance.check",
        "compliance:platform",
        {"status": str(report.status), "report_sha256": digest, **{r.name: str(r.status) for r in results}},
        role=principal.role.value,
    )
    head = AuditLog(open_catalog(settings)).head()
    report.audit_seq = head.seq if head else None
    return report
