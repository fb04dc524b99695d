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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from governance.audit import AuditLog, AuditRow, record
from governance.auth import Principal, Role, require_role
from governance.auth.users import User
from governance.catalog import Instance, Pseudonym, QuarantineRecord, open_catalog
from governance.keys import KeyError_, load_project_key
from governance.settings import Settings, get_settings
from imaging.compliance.config import ComplianceThresholds, load_thresholds
from imaging.compliance.erasure import ERASURE_REVIEW_TAG
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
            key.unseal(path.read_bytes(), rec.input_sha256.encode())
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


def _mlflow_client(settings: Settings) -> Any:
    uri = settings.resolved_mlflow_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    from governance.approvals.registry import registry_client

    return registry_client(uri)


def _audit(settings: Settings, t: ComplianceThresholds, now: datetime, client: Any) -> CheckResult:
    from governance.audit.verify import read_mlflow_anchor

    log = AuditLog(open_catalog(settings))
    anchor = read_mlflow_anchor(client) if client is not None else None
    report = log.verify(mlflow_anchor=anchor is not None)
    evidence: dict[str, Any] = {
        "entries": report.entries,
        "head_seq": report.head_seq,
        "anchors_checked": report.anchors_checked,
    }
    if not report.ok:
        evidence.update(problem=report.problem, first_bad_seq=report.first_bad_seq, detail=report.detail)
        return CheckResult(
            "audit_chain",
            CheckStatus.FAIL,
            f"audit chain broken: {report.problem} at entry {report.first_bad_seq}",
            evidence,
        )
    if anchor is None:
        status = CheckStatus.FAIL if t.require_mlflow_anchor else CheckStatus.WARN
        return CheckResult(
            "audit_chain",
            status,
            f"{report.entries} entries intact; head not anchored in "
            "MLflow (run `radgate audit anchor --mlflow`)",
            evidence,
        )
    anchored = int(anchor.get("seq", 0))
    evidence["mlflow_anchor_seq"] = anchored
    if report.head_seq > anchored:
        with open_catalog(settings).session() as session:
            first_unanchored = session.scalar(select(AuditRow.ts).where(AuditRow.seq == anchored + 1))
        age = (now - datetime.fromisoformat(str(first_unanchored))).total_seconds() / 86400
        evidence["unanchored_entries"], evidence["oldest_unanchored_days"] = (
            report.head_seq - anchored,
            round(age, 2),
        )
        if age > t.max_anchor_age_days:
            return CheckResult(
                "audit_chain",
                CheckStatus.WARN,
                f"{report.head_seq - anchored} entries not anchored for {age:.0f} days",
                evidence,
            )
    return CheckResult(
        "audit_chain",
        CheckStatus.PASS,
        f"{report.entries} entries intact, anchored at entry {anchored}",
        evidence,
    )


def _approvals(t: ComplianceThresholds, now: datetime, client: Any) -> CheckResult:
    if client is None:
        return CheckResult(
            "approvals", CheckStatus.PASS, "no model registry yet: nothing served", {"served": 0}
        )
    from governance.approvals import Workflow
    from governance.approvals.registry import gather_evidence
    from governance.policy import DecisionKind

    workflow = Workflow(client)
    served, failing, expiring, flagged = [], [], [], []
    for model in client.search_registered_models():
        for alias, version in (model.aliases or {}).items():
            target = f"{model.name}/{version}@{alias}"
            served.append(target)
            checklist = workflow.status(model.name, version, now=now)
            if not checklist.passed:
                failing.append({"model": target, "failures": [i.name for i in checklist.failures]})
            evidence, mv = gather_evidence(client, workflow.audit, model.name, version)
            if (mv.tags or {}).get(ERASURE_REVIEW_TAG) == "required":
                flagged.append(target)
            valid = workflow.policy.for_model(model.name).approval_valid_days
            approvals = [d.at for d in evidence.decisions if d.kind is DecisionKind.APPROVE and d.confirmed]
            if approvals and checklist.passed:
                expires = min(approvals) + timedelta(days=valid)
                if expires - now < timedelta(days=t.approval_expiry_warning_days):
                    expiring.append({"model": target, "expires": expires.isoformat(timespec="seconds")})
    # Versions trained on an erased patient's data wait for governance to set the tag to "reviewed".
    awaiting = [
        f"{mv.name}/{mv.version}"
        for mv in client.search_model_versions(filter_string=f"tags.`{ERASURE_REVIEW_TAG}` = 'required'")
    ]
    evidence_out = {
        "served": served,
        "without_valid_approval": failing,
        "expiring": expiring,
        "flagged_by_erasure": flagged,
        "awaiting_erasure_review": sorted(awaiting),
    }
    if failing or flagged:
        return CheckResult(
            "approvals",
            CheckStatus.FAIL,
            f"{len(failing)} served version(s) without a valid approval, "
            f"{len(flagged)} flagged by an erasure",
            evidence_out,
        )
    if expiring or awaiting:
        problems = []
        if expiring:
            problems.append(
                f"{len(expiring)} approval(s) expire within {t.approval_expiry_warning_days} days"
            )
        if awaiting:
            problems.append(f"{len(awaiting)} unserved version(s) trained on erased data await review")
        return CheckResult("approvals", CheckStatus.WARN, "; ".join(problems), evidence_out)
    return CheckResult(
        "approvals", CheckStatus.PASS, f"{len(served)} served version(s), all approved", evidence_out
    )


def _tokens(settings: Settings, t: ComplianceThresholds, now: datetime) -> CheckResult:
    with open_catalog(settings).session() as session:
        users = list(session.scalars(select(User).where(User.revoked_at.is_(None))))
        last = dict(
            session.execute(select(AuditRow.actor, func.max(AuditRow.ts)).group_by(AuditRow.actor)).all()
        )
    cutoff = now - timedelta(days=t.token_unused_days)
    unused = []
    for user in users:
        created = user.created_at if user.created_at.tzinfo else user.created_at.replace(tzinfo=UTC)
        seen = datetime.fromisoformat(last[user.name]) if user.name in last else created
        if seen < cutoff:
            unused.append({"user": user.name, "role": user.role, "last_activity": seen.date().isoformat()})
    admins = [u.name for u in users if u.role == Role.ADMIN.value]
    evidence = {
        "active_users": len(users),
        "unused": unused,
        "admins": admins,
        "max_admins": t.max_admins,
        "unused_days": t.token_unused_days,
    }
    problems = []
    if unused:
        problems.append(f"{len(unused)} token(s) unused for {t.token_unused_days} days")
    if len(admins) > t.max_admins:
        problems.append(f"{len(admins)} active admins (at most {t.max_admins})")
    if problems:
        return CheckResult("access_tokens", CheckStatus.WARN, "; ".join(problems), evidence)
    return CheckResult(
        "access_tokens", CheckStatus.PASS, f"{len(users)} active token(s), none idle", evidence
    )


def _retention(settings: Settings, t: ComplianceThresholds, now: datetime) -> CheckResult:
    from imaging.compliance.retention import retention_findings

    found = retention_findings(settings, now, t.max_quarantine_age_days)
    if found["pending_inputs_overdue"] or found["pending_inputs_orphaned"]:
        return CheckResult(
            "retention",
            CheckStatus.FAIL,
            f"{found['pending_inputs_overdue']} served input(s) kept past their expiry, "
            f"{found['pending_inputs_orphaned']} sealed input(s) without a record",
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
    client = _mlflow_client(settings)
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("store_deidentified", lambda: _store(settings, t, sample, seed)),
        ("quarantine_sealed", lambda: _quarantine(settings)),
        ("project_key", lambda: _key(settings, t, now)),
        ("pseudonym_map", lambda: _map(settings)),
        ("audit_chain", lambda: _audit(settings, t, now, client)),
        ("approvals", lambda: _approvals(t, now, client)),
        ("retention", lambda: _retention(settings, t, now)),
        ("access_tokens", lambda: _tokens(settings, t, now)),
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
