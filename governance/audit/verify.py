"""Verification and anchoring of the audit chain.

:func:`verify_chain` recomputes every hash and MAC and names the first problem: ``deleted``
(a gap in ``seq``), ``reordered`` (content hashed for a neighbouring position), ``altered``
(content or link changed), ``inserted`` (an entry spliced into the chain), ``forged`` (a chain
rebuilt without the audit writer's signing key, under an unknown key, or by a restricted
writer's key after its revocation) and, against the
signed head anchor and anchors kept outside the table, ``truncated`` (newest entries removed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, select, type_coerce

from governance.audit.entries import GENESIS_HASH, AuditRow, row_hash
from governance.audit.revocation import WriterRevocations
from governance.settings import get_settings

if TYPE_CHECKING:
    from governance.audit.log import AuditLog

__all__ = [
    "ANCHOR_EXPERIMENT",
    "ANCHOR_TAG",
    "VerifyReport",
    "anchor_to_file",
    "anchor_to_mlflow",
    "read_mlflow_anchor",
    "verify_chain",
]

ANCHOR_EXPERIMENT = "radgate-audit"
ANCHOR_TAG = "radgate.audit.head"


@dataclass
class VerifyReport:
    """Outcome of :meth:`AuditLog.verify`: ``ok`` or the first problem found."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problem: str | None = None
    first_bad_seq: int | None = None
    detail: str = ""
    unchecked_macs: int = 0
    anchors_checked: list[str] = field(default_factory=list)


def _raw_rows(log: AuditLog, batch: int = 1000) -> Iterator[SimpleNamespace]:
    """Rows as stored, with ``details`` parsed here (``None`` when it is not valid JSON), so a
    damaged row is reported instead of crashing the ORM's JSON loader."""
    table = AuditRow.__table__
    columns = [c if c.name != "details" else type_coerce(c, String).label("details") for c in table.c]
    last = 0
    while True:
        query = select(*columns).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
        with log.catalog.session() as session:
            rows = [SimpleNamespace(**row._mapping) for row in session.execute(query)]
        if not rows:
            return
        for row in rows:
            try:
                row.details = json.loads(row.details)
            except (TypeError, ValueError):
                row.details = None
            yield row
        last = rows[-1].seq


def _head(log: AuditLog) -> dict[str, Any]:
    head = log.head()
    if head is None:
        return {"seq": 0, "hash": GENESIS_HASH, "ts": ""}
    return {"seq": head.seq, "hash": head.hash, "ts": head.ts}


def anchor_to_file(log: AuditLog, path: Path) -> dict[str, Any]:
    """Write the current head (seq, hash, time), signed, to ``path`` (a WORM disk or a ticket)."""
    head = _head(log)
    anchor = log.signed_anchor(int(head["seq"]), str(head["hash"]), str(head["ts"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(anchor) + "\n")
    return anchor


def anchor_to_mlflow(log: AuditLog, client: Any = None) -> dict[str, Any]:
    """Record the head as a tag of the MLflow experiment ``radgate-audit`` (another system,
    usually administered by other people than the catalog database)."""
    client = client or _mlflow_client()
    anchor = _head(log)
    experiment = client.get_experiment_by_name(ANCHOR_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(ANCHOR_EXPERIMENT)
    client.set_experiment_tag(experiment_id, ANCHOR_TAG, json.dumps(anchor))
    return anchor


def read_mlflow_anchor(client: Any = None) -> dict[str, Any] | None:
    client = client or _mlflow_client()
    experiment = client.get_experiment_by_name(ANCHOR_EXPERIMENT)
    if experiment is None or ANCHOR_TAG not in experiment.tags:
        return None
    value: dict[str, Any] = json.loads(experiment.tags[ANCHOR_TAG])
    return value


def verify_chain(
    log: AuditLog,
    anchors: list[Path] | None = None,
    *,
    accept_key_ids: list[str] | None = None,
    mlflow_anchor: bool = False,
) -> VerifyReport:
    """Recompute the chain; name the first altered, inserted, deleted or reordered entry.

    ``anchors`` are head files written by :func:`anchor_to_file`; the automatic head file
    under ``RADGATE_HOME/audit`` must exist (once there are entries) and be signed by the audit
    writer. Entries not signed by a known audit key fail as ``forged`` unless their key id is
    in ``accept_key_ids`` (entries of an older release; counted as unchecked).
    """
    accepted = set(accept_key_ids or [])
    prev, prevprev = GENESIS_HASH, None
    expected = 1
    unchecked = 0
    hashes: dict[int, str] = {}
    report = VerifyReport(ok=True, entries=0, head_seq=0, head_hash=GENESIS_HASH)
    revocations = WriterRevocations.registered(log)  # and those the chain records, as it is walked

    def fail(problem: str, seq: int, detail: str) -> VerifyReport:
        report.ok, report.problem, report.first_bad_seq, report.detail = False, problem, seq, detail
        return report

    for row in _raw_rows(log):
        report.entries += 1
        if row.seq != expected:
            return fail("deleted", expected, f"entries {expected}..{row.seq - 1} are missing")
        recomputed = row_hash(row)
        if recomputed != row.hash:
            if row_hash(row, row.seq - 1) == row.hash or row_hash(row, row.seq + 1) == row.hash:
                return fail("reordered", row.seq, "entry content belongs to another position")
            return fail("altered", row.seq, "content does not match its hash")
        if row.prev_hash != prev:
            if prevprev is not None and row.prev_hash == prevprev:
                return fail("inserted", row.seq - 1, "entry was inserted into the chain")
            return fail("altered", row.seq - 1, "chain link broken: previous entry was changed")
        if row.key_id in accepted:
            unchecked += 1
        elif not log.signature_valid(row.key_id, row.hash, row.mac, row.action):
            return fail("forged", row.seq, f"not signed by the audit writer's key (key id {row.key_id!r})")
        revoked = revocations.revoked_at(row.key_id, row.seq)
        if revoked is not None:
            return fail("forged", row.seq, f"signed by writer key {row.key_id!r}, revoked at entry {revoked}")
        revocations.note(log, row.seq, row.action, row.key_id, row.details)
        prevprev, prev = prev, row.hash
        hashes[row.seq] = row.hash
        expected += 1
    report.head_seq, report.head_hash, report.unchecked_macs = expected - 1, prev, unchecked
    sources: list[tuple[str, dict[str, Any] | None]] = []
    from governance.audit.chain import read_anchor

    head = read_anchor(log.head_file)
    if head is not None:
        if not log.anchor_valid(head):
            return fail("anchor-forged", 0, "the head anchor is not signed by the audit writer's key")
        sources.append((log.head_file.name, head))
    for path in anchors or []:
        if not path.exists():
            return fail("anchor-missing", 0, f"anchor file {path} not found")
        try:
            sources.append((path.name, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            return fail("anchor-unreadable", 0, f"{path}: {exc}")
    if mlflow_anchor:
        sources.append((f"mlflow:{ANCHOR_EXPERIMENT}", read_mlflow_anchor()))
    for label, anchor in sources:
        if anchor is None:
            return fail("anchor-missing", 0, f"no anchor in {label}")
        try:
            seq, digest = int(anchor["seq"]), str(anchor["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            return fail("anchor-unreadable", 0, f"{label}: {exc}")
        report.anchors_checked.append(label)
        if seq > report.head_seq:
            return fail(
                "truncated",
                report.head_seq + 1,
                f"anchor {label} names entry {seq} but the log ends at {report.head_seq}",
            )
        if seq and hashes.get(seq) != digest:
            return fail("altered", seq, f"entry {seq} differs from anchor {label}")
    if head is None and report.entries:
        return fail("anchor-missing", 0, f"the signed head anchor {log.head_file} is missing")
    return report


def _mlflow_client() -> Any:
    from mlflow import MlflowClient

    uri = get_settings().resolved_mlflow_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
