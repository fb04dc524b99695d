"""The approval workflow on MLflow: submit, approve, reject, revoke, promote, status.

Every step is checked against the caller's role, written to the audit log first (the
authority) and mirrored as model-version tags for the MLflow UI. Comments live only in the
MLflow tag; the audit entry keeps their SHA-256 (free text may not enter the audit log).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, cast

from governance.approvals.policy_record import sign_policy, signed_policy_sha256
from governance.approvals.registry import (
    TAG_ALIAS_PREFIX,
    TAG_ARTIFACT_SHA256,
    TAG_DECISION_PREFIX,
    TAG_STATUS,
    TAG_SUBMISSION,
    RegistryError,
    artifact_sha256,
    gather_evidence,
    get_version,
    model_target,
    registry_client,
)
from governance.audit import AuditEntry, AuditLog
from governance.auth.roles import PermissionDenied, Principal, Role, require_role
from governance.policy import Checklist, DecisionKind, Policy, evaluate, load_policy

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "PROMOTER_ROLES",
    "REVOKER_ROLES",
    "SUBMITTER_ROLES",
    "AliasNotAllowed",
    "ApprovalError",
    "Outcome",
    "PolicyChanged",
    "PolicyNotSatisfied",
    "SelfApproval",
    "VersionRevoked",
    "Workflow",
]

SUBMITTER_ROLES = (Role.ML_ENGINEER,)
PROMOTER_ROLES = (Role.ML_ENGINEER, Role.ADMIN)
REVOKER_ROLES = (Role.CLINICAL_REVIEWER, Role.ML_ENGINEER, Role.ADMIN)
_MAX_COMMENT = 1000


class ApprovalError(RuntimeError):
    """A workflow step is not possible in the version's current state."""


class SelfApproval(ApprovalError, PermissionDenied):
    """The submitter of a version may not approve it (unless the policy says otherwise)."""


class VersionRevoked(ApprovalError):
    """The version was revoked; it can never be approved or promoted again."""


class AliasNotAllowed(ApprovalError):
    """The policy does not allow this alias for this model."""


class PolicyChanged(ApprovalError):
    """The policy in force is not the one last signed (``radgate policy sign``)."""


class PolicyNotSatisfied(ApprovalError):
    """Promotion refused: the checklist has failures."""

    def __init__(self, checklist: Checklist) -> None:
        self.checklist = checklist
        failed = ", ".join(item.name for item in checklist.failures)
        super().__init__(f"policy not satisfied for {checklist.name} v{checklist.version}: {failed}")


@dataclass(frozen=True)
class Outcome:
    """What a workflow step did: the audit entry's sequence number and the new checklist."""

    audit_seq: int
    checklist: Checklist


_Step = TypeVar("_Step", bound=Callable[..., Outcome])


def _audit_refusals(step: str) -> Callable[[_Step], _Step]:
    """Record refused attempts (wrong role, self-approval, policy not met) in the audit log:
    auditors need the attempts, not only the successes."""

    def wrap(method: _Step) -> _Step:
        @functools.wraps(method)
        def run(
            self: Workflow, principal: Principal, name: str, version: str | int, *args: object
        ) -> Outcome:
            try:
                return method(self, principal, name, version, *args)
            except (PermissionDenied, ApprovalError) as exc:
                self.audit.append(
                    principal.name,
                    f"model.{step}.refused",
                    model_target(name, version),
                    {"reason": type(exc).__name__},
                    role=principal.role.value,
                )
                raise

        return cast(_Step, run)

    return wrap


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Workflow:
    """Workflow steps against one MLflow registry, audit log and policy."""

    def __init__(
        self, client: MlflowClient | None = None, audit: AuditLog | None = None, policy: Policy | None = None
    ) -> None:
        self.client = client or registry_client()
        self.audit = audit or AuditLog()
        self.policy = policy or load_policy()

    # ---- reading ---------------------------------------------------------------------------

    def status(self, name: str, version: str | int, *, now: datetime | None = None) -> Checklist:
        evidence, _ = gather_evidence(self.client, self.audit, name, version)
        return evaluate(self.policy.for_model(name), evidence, now or datetime.now(UTC))

    def history(self, name: str, version: str | int) -> list[dict[str, object]]:
        """Every workflow step on the version from the audit log (who, role, when, what, on
        which artifact, whether the entry is authentic), with the comment from its MLflow tag."""
        mv = get_version(self.client, name, version)
        tags = mv.tags or {}
        rows: list[dict[str, object]] = []
        for entry in self.audit.entries(target=model_target(name, mv.version), action="model."):
            comment = ""
            raw = tags.get(f"{TAG_DECISION_PREFIX}{entry.seq:010d}")
            if raw is None and entry.action == "model.submit":
                raw = tags.get(TAG_SUBMISSION)
            if raw:
                try:
                    stored = json.loads(raw)
                    # Shown only if it is the comment the audit entry hashed.
                    if _sha(stored.get("comment", "")) == entry.details.get("comment_sha256"):
                        comment = stored.get("comment", "")
                except ValueError:
                    pass
            rows.append(
                {
                    "seq": entry.seq,
                    "at": entry.ts,
                    "actor": entry.actor,
                    "role": entry.role,
                    "action": entry.action.removeprefix("model."),
                    "artifact_sha256": entry.details.get("artifact_sha256"),
                    "alias": entry.details.get("alias"),
                    "comment": comment,
                    "authentic": self.audit.authentic(entry),
                }
            )
        return rows

    # ---- writing ---------------------------------------------------------------------------

    @_audit_refusals("submit")
    def submit(self, principal: Principal, name: str, version: str | int, comment: str = "") -> Outcome:
        """Mark a version ready for review, recording the hash of its artifact now."""
        require_role(principal, *SUBMITTER_ROLES)
        comment = self._comment(comment)
        self._refuse_revoked(name, version)
        digest = artifact_sha256(self.client, name, version)
        entry = self._audit(principal, "model.submit", name, version, digest, comment)
        value = {
            "actor": principal.name,
            "role": principal.role.value,
            "at": entry.ts,
            "artifact_sha256": digest,
            "comment": comment,
            "audit_hash": entry.hash,
            "audit_seq": entry.seq,
        }
        self._tag(name, version, TAG_SUBMISSION, json.dumps(value))
        if TAG_ARTIFACT_SHA256 not in (get_version(self.client, name, version).tags or {}):
            self._tag(name, version, TAG_ARTIFACT_SHA256, digest)  # registration did not record it
        return self._after(name, version, entry.seq)

    @_audit_refusals("approve")
    def approve(self, principal: Principal, name: str, version: str | int, comment: str = "") -> Outcome:
        return self._decide(principal, DecisionKind.APPROVE, name, version, comment)

    @_audit_refusals("reject")
    def reject(self, principal: Principal, name: str, version: str | int, comment: str = "") -> Outcome:
        return self._decide(principal, DecisionKind.REJECT, name, version, comment)

    @_audit_refusals("revoke")
    def revoke(self, principal: Principal, name: str, version: str | int, comment: str = "") -> Outcome:
        """Withdraw a version for good: every alias pointing at it is removed."""
        outcome = self._decide(principal, DecisionKind.REVOKE, name, version, comment)
        mv = get_version(self.client, name, version)
        for alias in list(mv.aliases or []):
            self.client.delete_registered_model_alias(name, alias)
            self._delete_tag(name, version, TAG_ALIAS_PREFIX + alias)
            self.audit.append(
                principal.name,
                "model.demote",
                model_target(name, mv.version),
                {"alias": alias, "reason": "revoked"},
                role=principal.role.value,
            )
        return outcome

    @_audit_refusals("promote")
    def promote(self, principal: Principal, name: str, version: str | int, alias: str) -> Outcome:
        """Point ``alias`` at the version, only if the policy holds now."""
        require_role(principal, *PROMOTER_ROLES)
        model_policy = self.policy.for_model(name)
        if alias not in model_policy.allowed_aliases:
            allowed = ", ".join(model_policy.allowed_aliases)
            raise AliasNotAllowed(f"alias {alias!r} is not allowed for {name} (allowed: {allowed})")
        signed = signed_policy_sha256(self.audit)
        if signed is None:  # first use of this catalog: the promoter signs the policy in force
            sign_policy(self.audit, principal, self.policy, first_use=True)
        elif signed != self.policy.sha256:
            raise PolicyChanged(
                f"the policy in force (sha256 {self.policy.sha256[:12]}) is not the signed one: "
                "an admin must review and sign it (radgate policy sign)"
            )
        checklist = self.status(name, version)
        if not checklist.passed:
            raise PolicyNotSatisfied(checklist)
        mv = get_version(self.client, name, version)
        digest = next(i.value for i in checklist.items if i.name == "artifact unchanged")
        previous = self._alias_holder(name, alias)
        entry = self.audit.append(
            principal.name,
            "model.promote",
            model_target(name, mv.version),
            {"alias": alias, "artifact_sha256": digest, "policy_sha256": self.policy.sha256},
            role=principal.role.value,
        )
        value = {"by": principal.name, "at": entry.ts, "artifact_sha256": digest, "audit_hash": entry.hash}
        self._tag(name, mv.version, TAG_ALIAS_PREFIX + alias, json.dumps(value))
        self.client.set_registered_model_alias(name, alias, str(mv.version))
        if previous is not None and previous != str(mv.version):
            self._delete_tag(name, previous, TAG_ALIAS_PREFIX + alias)
        self._tag(name, mv.version, TAG_STATUS, f"approved; serving as {alias}")
        return Outcome(entry.seq, checklist)

    # ---- helpers ---------------------------------------------------------------------------

    def _decide(
        self, principal: Principal, kind: DecisionKind, name: str, version: str | int, comment: str
    ) -> Outcome:
        model_policy = self.policy.for_model(name)
        if kind is DecisionKind.REVOKE:
            require_role(principal, *REVOKER_ROLES)
        else:
            require_role(principal, *(need.role for need in model_policy.approvals))
        comment = self._comment(comment)
        evidence, mv = gather_evidence(self.client, self.audit, name, version)
        if any(d.kind is DecisionKind.REVOKE and d.confirmed for d in evidence.decisions):
            raise VersionRevoked(f"{name} v{mv.version} was revoked")
        if kind is not DecisionKind.REVOKE and evidence.submission is None:
            raise ApprovalError(f"{name} v{mv.version} has not been submitted for review")
        if (
            kind is DecisionKind.APPROVE
            and evidence.submission is not None
            and evidence.is_submitter(principal.name)
            and not model_policy.submitter_may_approve
        ):
            raise SelfApproval(f"{principal.name} submitted {name} v{mv.version} and may not approve it")
        if evidence.artifact_sha256 is None and kind is DecisionKind.APPROVE:
            raise RegistryError(f"the artifact of {name} v{mv.version} cannot be read")
        digest = evidence.artifact_sha256 or "unreadable"  # a missing artifact can still be rejected/revoked
        entry = self._audit(principal, f"model.{kind.value}", name, mv.version, digest, comment)
        value = {
            "decision": kind.value,
            "actor": principal.name,
            "role": principal.role.value,
            "at": entry.ts,
            "artifact_sha256": digest,
            "comment": comment,
            "policy_sha256": self.policy.sha256,
            "audit_hash": entry.hash,
        }
        self._tag(name, mv.version, f"{TAG_DECISION_PREFIX}{entry.seq:010d}", json.dumps(value))
        return self._after(name, mv.version, entry.seq)

    def _audit(
        self, principal: Principal, action: str, name: str, version: str | int, digest: str, comment: str
    ) -> AuditEntry:
        details = {"artifact_sha256": digest, "comment_sha256": _sha(comment) if comment else None}
        return self.audit.append(
            principal.name, action, model_target(name, version), details, role=principal.role.value
        )

    def _after(self, name: str, version: str | int, seq: int) -> Outcome:
        checklist = self.status(name, version)
        self._tag(name, version, TAG_STATUS, checklist.status)
        return Outcome(seq, checklist)

    def _refuse_revoked(self, name: str, version: str | int) -> None:
        evidence, mv = gather_evidence(self.client, self.audit, name, version, with_hash=False)
        if any(d.kind is DecisionKind.REVOKE and d.confirmed for d in evidence.decisions):
            raise VersionRevoked(f"{name} v{mv.version} was revoked")

    def _alias_holder(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    @staticmethod
    def _comment(comment: str) -> str:
        comment = (comment or "").strip()
        if len(comment) > _MAX_COMMENT:
            raise ApprovalError(f"comments are limited to {_MAX_COMMENT} characters")
        return comment

    def _tag(self, name: str, version: str | int, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value)

    def _delete_tag(self, name: str, version: str | int, key: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            self.client.delete_model_version_tag(name, str(version), key)
