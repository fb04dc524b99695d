"""Governance-side compliance checks: the audit chain and its anchor, approvals of served
models (validity, expiry, erasure flags) and access tokens (idle, too many admins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from governance.audit import AuditLog, AuditRow
from governance.auth import Role
from governance.auth.users import User
from governance.catalog import open_catalog
from governance.settings import Settings
from imaging.compliance.config import ComplianceThresholds
from imaging.compliance.erasure import ERASURE_REVIEW_TAG
from imaging.compliance.result import CheckResult, CheckStatus

__all__ = ["approvals_check", "audit_check", "mlflow_client_if_present", "tokens_check"]


def mlflow_client_if_present(settings: Settings) -> Any:
    uri = settings.resolved_mlflow_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    from governance.approvals.registry import registry_client

    return registry_client(uri)


def audit_check(settings: Settings, t: ComplianceThresholds, now: datetime, client: Any) -> CheckResult:
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


def approvals_check(t: ComplianceThresholds, now: datetime, client: Any) -> CheckResult:
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


def tokens_check(settings: Settings, t: ComplianceThresholds, now: datetime) -> CheckResult:
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
