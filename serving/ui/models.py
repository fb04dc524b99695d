"""Read-side helpers for the model pages: registered models, versions and their evidence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from governance.approvals import TAG_STATUS, Workflow, gather_evidence
from governance.approvals.workflow import PROMOTER_ROLES, REVOKER_ROLES, SUBMITTER_ROLES
from governance.auth import Principal, Role
from governance.tags import Tag
from serving.ui.evidence import Evidence, run_evidence

__all__ = ["VersionRow", "VersionView", "allowed_actions", "list_versions", "version_view"]

_GAP = re.compile(r"^subgroup_gap_(?P<attribute>[a-z0-9]+)_(?P<metric>[a-z0-9_]+)$")


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    status: str
    aliases: list[str]
    created: int


@dataclass
class VersionView:
    name: str
    version: str
    checklist: dict[str, Any]
    metrics: dict[str, float]
    subgroups: list[dict[str, Any]]
    sanity: str | None
    aliases: list[str]
    history: list[dict[str, object]]
    allowed_aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    evidence: Evidence = field(default_factory=Evidence)


def list_versions(workflow: Workflow) -> dict[str, list[VersionRow]]:
    """Every registered model with its versions, newest first."""
    client = workflow.client
    out: dict[str, list[VersionRow]] = {}
    for model in client.search_registered_models():
        rows = [
            VersionRow(
                model.name,
                str(mv.version),
                (mv.tags or {}).get(TAG_STATUS, "registered"),
                list(getattr(mv, "aliases", None) or []),
                int(mv.creation_timestamp or 0),
            )
            for mv in client.search_model_versions(f"name = '{model.name}'")
        ]
        out[model.name] = sorted(rows, key=lambda r: int(r.version), reverse=True)
    return out


def version_view(workflow: Workflow, name: str, version: str) -> VersionView:
    evidence, mv = gather_evidence(workflow.client, workflow.audit, name, version)
    checklist = workflow.status(name, version)
    subgroups = []
    for key, value in sorted(evidence.metrics.items()):
        match = _GAP.match(key)
        if match:
            subgroups.append({"attribute": match["attribute"], "metric": match["metric"], "gap": value})
    sanity = evidence.tags.get(Tag.SALIENCY_SANITY)
    return VersionView(
        name=name,
        version=str(mv.version),
        checklist=checklist.to_dict(),
        metrics={k: v for k, v in sorted(evidence.metrics.items()) if not _GAP.match(k)},
        subgroups=subgroups,
        sanity=sanity,
        aliases=list(getattr(mv, "aliases", None) or []),
        history=workflow.history(name, version),
        allowed_aliases=list(workflow.policy.for_model(name).allowed_aliases),
        run_id=mv.run_id,
        evidence=run_evidence(workflow.client, mv.run_id),
    )


def allowed_actions(workflow: Workflow, principal: Principal, name: str) -> list[str]:
    """The workflow steps the principal's role may take (the workflow checks again on POST)."""
    approvers = {need.role for need in workflow.policy.for_model(name).approvals}
    actions = []
    role: Role = principal.role
    if role in SUBMITTER_ROLES:
        actions.append("submit")
    if role in approvers:
        actions += ["approve", "reject"]
    if role in REVOKER_ROLES:
        actions.append("revoke")
    if role in PROMOTER_ROLES:
        actions.append("promote")
    return actions
