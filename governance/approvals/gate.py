"""The serving gate: may this model (by alias or version) serve now?

Serving calls :func:`gate` at deploy time and on every request. A decision is cached for a
few seconds (``ttl_s``) and dropped sooner when the audit log gains a governance entry (an
action under ``model.`` or ``policy.``: submit, approve, reject, revoke, promote, demote, a
signed policy), which the gate probes for every ``probe_s`` (0.25 s) with one indexed query; so
a revocation is refused within about ``probe_s`` plus one decision while a cached answer costs
microseconds; the artifact's hash is recomputed every ``artifact_ttl_s`` (60 s; it may
mean downloading the model) and on ``fresh=True`` (use it at deploy time). A local artifact
whose files are unchanged since a process last hashed them is not read again outside
``fresh=True``: the hash comes from that process's MACed record, checked against the files'
identities (:mod:`governance.approvals.digests`). Any error fails closed (denied, with the
reason).

For an alias, beyond the policy checklist, the alias must be allowed by the policy and the
newest authentic RadGate promotion for that alias must name the version the alias points
at: an alias set directly in MLflow (UI or API) is denied and reported.

The audit log is the authority for approvals and revocations, and a deleted revocation is an
absence that no entry's signature shows: every decision first verifies (incrementally, see
:class:`governance.audit.ChainGuard`) that the log is one contiguous signed chain up to the
signed head anchored outside the database, and is denied when it is not. Every entry the
decision reads must then be authentic; one that is not denies (it is never skipped).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from governance.approvals.digests import recorded_sha256
from governance.approvals.policy_record import policy_reason
from governance.approvals.registry import (
    RegistryError,
    artifact_location,
    bound_registry_http,
    gather_evidence,
    hash_artifact,
    model_target,
    registry_client,
)
from governance.audit import AuditLog, ChainBroken, ChainGuard
from governance.policy import Policy, PolicyError, evaluate, load_policy
from governance.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "DEFAULT_ARTIFACT_TTL_S",
    "DEFAULT_PROBE_S",
    "DEFAULT_TTL_S",
    "GOVERNANCE_PREFIXES",
    "Gate",
    "GateDecision",
    "clear_gate_cache",
    "default_gate",
    "gate",
]

DEFAULT_TTL_S = 5.0
DEFAULT_ARTIFACT_TTL_S = 60.0
DEFAULT_PROBE_S = 0.25
#: Audit actions that change what the gate may decide (the approvals workflow and the policy).
GOVERNANCE_PREFIXES = ("model.", "policy.")


@dataclass(frozen=True)
class GateDecision:
    """Allowed or denied, with the reasons (empty when allowed)."""

    allowed: bool
    name: str
    alias: str | None
    version: str | None
    artifact_sha256: str | None
    reasons: list[str] = field(default_factory=list)
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    cached: bool = False
    policy_sha256: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at.isoformat(),
            "cached": self.cached,
            "policy_sha256": self.policy_sha256,
        }


#: MLflow's error codes for a model or alias that does not exist (any other error is the
#: registry failing, which the decision reports as such).
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def _done(value: str | None) -> Future[str | None]:
    done: Future[str | None] = Future()
    done.set_result(value)
    return done


class Gate:
    """A gate over one registry, audit log and policy, with a TTL cache of decisions."""

    def __init__(
        self,
        client: MlflowClient | None = None,
        audit: AuditLog | None = None,
        policy: Policy | None = None,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        artifact_ttl_s: float = DEFAULT_ARTIFACT_TTL_S,
        probe_s: float = DEFAULT_PROBE_S,
    ) -> None:
        self._client = client
        self._audit = audit
        self._policy = policy
        self.ttl_s = ttl_s
        self.probe_s = probe_s
        # (when to probe next, the newest governance seq seen); -1: not yet read, or unreadable
        self._probe: tuple[float, int] = (0.0, -1)
        self._probe_lock = threading.Lock()
        # Re-hashing a large (possibly remote) artifact is the costly part of a decision, so
        # its hash is kept longer than the decision; fresh=True re-hashes.
        self.artifact_ttl_s = artifact_ttl_s
        # key -> (expiry, decision, the governance seq read before deciding)
        self._cache: dict[tuple[str, str | None, str | None], tuple[float, GateDecision, int]] = {}
        self._hashes: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        # One decision in flight per key: concurrent requests that find the entry expired wait
        # for it instead of each querying the registry and the audit log (a thundering herd
        # every ``ttl_s`` under load).
        self._deciding: dict[tuple[str, str | None, str | None], threading.Lock] = {}
        self._chain: ChainGuard | None = None
        self._hash_pool: ThreadPoolExecutor | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = registry_client()
        return self._client

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = AuditLog()
        return self._audit

    @property
    def chain(self) -> ChainGuard:
        if self._chain is None:
            self._chain = ChainGuard(self.audit)
        return self._chain

    def warm_up(self) -> None:
        """What a serving replica does once at start-up, before its first decision: bound
        MLflow's HTTP retries (:func:`bound_registry_http`), build the registry client and its
        store, open the audit log's catalog, configure the ORM mappers and read the policy. No
        decision, artifact hash or governance position is cached, so the first decision after
        it is still a cold one (measured by ``scripts/bench/gate.py``). An unreachable registry
        or catalog is left for the decision to report (fail closed)."""
        from sqlalchemy.orm import configure_mappers

        bound_registry_http()
        try:
            client = self.client
            client._get_registry_client().store  # noqa: B018 (builds the store: a SQL engine or a REST session)
            self.audit.catalog.engine.connect().close()
            configure_mappers()
            if self._policy is None:
                load_policy()
        except Exception:  # warming is best effort: each decision re-checks and fails closed
            return

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._hashes.clear()

    def __call__(
        self, name: str, alias: str | None = None, *, version: str | int | None = None, fresh: bool = False
    ) -> GateDecision:
        if (alias is None) == (version is None):
            raise ValueError("give exactly one of alias or version")
        key = (name, alias, None if version is None else str(version))
        if fresh:
            seen = self._governance_seq(force=True)
            return self._store(key, self._decide(name, alias, key[2], fresh), seen)
        hit = self._cached(key)
        if hit is not None:
            return hit
        with self._lock:
            deciding = self._deciding.setdefault(key, threading.Lock())
        with deciding:
            # A decision that finished while this thread waited is as fresh as one it would make.
            hit = self._cached(key)
            if hit is not None:
                return hit
            seen = self._governance_seq(force=True)  # read before deciding: a later entry re-decides
            return self._store(key, self._decide(name, alias, key[2], fresh), seen)

    def _governance_seq(self, *, force: bool = False) -> int:
        """The newest governance entry's seq, read at most every ``probe_s`` (``force``: now);
        -1 when the log cannot be read (no cached decision then survives the probe)."""
        now = time.monotonic()
        with self._probe_lock:
            due, seen = self._probe
            if not force and now < due:
                return seen
            try:
                seen = self.audit.latest_seq(GOVERNANCE_PREFIXES)
            except Exception:  # fail closed: an unreadable log invalidates every cached decision
                seen = -1
            self._probe = (now + self.probe_s, seen)
            return seen

    def _cached(self, key: tuple[str, str | None, str | None]) -> GateDecision | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        seen = self._governance_seq()
        if seen < 0 or seen != hit[2]:
            return None  # the workflow or the policy moved since this decision: decide again
        return replace(hit[1], cached=True)

    def _store(
        self, key: tuple[str, str | None, str | None], decision: GateDecision, seen: int
    ) -> GateDecision:
        with self._lock:
            self._cache[key] = (time.monotonic() + self.ttl_s, decision, seen)
        return decision

    def _artifact_hash(self, name: str, version: str, fresh: bool) -> Future[str | None]:
        """The artifact's hash (``None``: unreadable), as a future.

        The registry is read here, in the deciding thread; only reading the bytes runs in the
        hash pool (hashlib and file reads release the GIL, the registry's Python does not: two
        threads running it take turns at the GIL, each turn up to the switch interval). A hash
        from this process within ``artifact_ttl_s``, or an authentic record of a local
        artifact whose files are unchanged, is returned done; ``fresh`` reads the bytes."""
        key = (name, version)
        with self._lock:
            hit = self._hashes.get(key)
        if hit is not None and hit[0] > time.monotonic() and not fresh:
            return _done(hit[1])
        try:
            location = artifact_location(self.client, name, version)
        except RegistryError:
            return _done(self._remember_hash(key, None))
        if isinstance(location, Path) and not fresh:
            known = recorded_sha256(location)
            if known is not None:
                return _done(self._remember_hash(key, known))
        return self._hasher().submit(self._hash_bytes, key, location)

    def _hash_bytes(self, key: tuple[str, str], location: Path | str) -> str | None:
        try:
            digest: str | None = hash_artifact(self.client, key[0], key[1], location)
        except RegistryError:
            digest = None
        return self._remember_hash(key, digest)

    def _remember_hash(self, key: tuple[str, str], digest: str | None) -> str | None:
        with self._lock:
            self._hashes[key] = (time.monotonic() + self.artifact_ttl_s, digest)
        return digest

    def _hasher(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._hash_pool is None:
                self._hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gate-hash")
            return self._hash_pool

    def _decide(self, name: str, alias: str | None, version: str | None, fresh: bool = False) -> GateDecision:
        from mlflow.exceptions import MlflowException

        policy_sha: str | None = None
        aliased: ModelVersion | None = None  # the version the alias names, as the registry read it
        try:
            loaded = self._policy or load_policy()
            policy_sha = loaded.sha256
            policy = loaded.for_model(name)
            self.chain.check()
            unsigned = policy_reason(self.audit, loaded)
            if alias is not None:
                if alias not in policy.allowed_aliases:
                    return GateDecision(
                        False,
                        name,
                        alias,
                        None,
                        None,
                        [f"alias {alias!r} not allowed by policy"],
                        policy_sha256=policy_sha,
                    )
                try:
                    aliased = self.client.get_model_version_by_alias(name, alias)
                    version = str(aliased.version)
                except MlflowException as exc:
                    if exc.error_code not in _NOT_FOUND:
                        raise  # the registry failed (unreachable, erroring): reported as a gate error
                    return GateDecision(
                        False,
                        name,
                        alias,
                        None,
                        None,
                        [f"alias {alias!r} is not set"],
                        policy_sha256=policy_sha,
                    )
            assert version is not None
            # Reading the artifact's bytes (tens of MB; hashlib releases the GIL) runs beside the
            # registry and audit queries of the evidence: a decision that must read them waits
            # for the longer of the two instead of their sum.
            hashing = self._artifact_hash(name, version, fresh)
            evidence, _ = gather_evidence(
                self.client, self.audit, name, version, with_hash=False, strict=True, model_version=aliased
            )
            evidence = replace(evidence, artifact_sha256=hashing.result())
            checklist = evaluate(policy, evidence, datetime.now(UTC))
            reasons = [
                f"{item.name}: {item.detail or 'failed'} (value {item.value!r}, expected {item.expected})"
                for item in checklist.failures
            ]
            if alias is not None:
                reasons.extend(self._alias_reasons(name, alias, version))
            if unsigned is not None:  # never allowed under a policy that is not the signed one
                reasons.append(unsigned)
            return GateDecision(
                not reasons, name, alias, version, evidence.artifact_sha256, reasons, policy_sha256=policy_sha
            )
        except ChainBroken as exc:
            return GateDecision(False, name, alias, version, None, [str(exc)], policy_sha256=policy_sha)
        except (MlflowException, RegistryError, PolicyError, OSError) as exc:
            return GateDecision(
                False, name, alias, version, None, [f"gate error: {exc}"], policy_sha256=policy_sha
            )
        except Exception as exc:  # fail closed on anything else (e.g. a damaged audit row)
            return GateDecision(
                False,
                name,
                alias,
                version,
                None,
                [f"gate error: {type(exc).__name__}: {exc}"],
                policy_sha256=policy_sha,
            )

    def _alias_reasons(self, name: str, alias: str, version: str) -> list[str]:
        """The alias must have been set by RadGate's promote for exactly this version."""
        entries = self.audit.entries(
            target_prefix=f"model:{name}/", actions=["model.promote", "model.demote"], newest_first=True
        )
        for entry in entries:
            if not self.audit.authentic(entry):
                raise ChainBroken("forged", entry.seq, "an alias entry is not signed by the audit writer")
            if entry.details.get("alias") != alias:
                continue
            if entry.action == "model.promote" and entry.target == model_target(name, version):
                return []
            return [
                f"alias {alias!r} -> v{version} was not set by RadGate (set outside, e.g. in the MLflow UI)"
            ]
        return [f"alias {alias!r} -> v{version} was not set by RadGate (set outside, e.g. in the MLflow UI)"]


_gates: dict[str, Gate] = {}
_gates_lock = threading.Lock()


def default_gate() -> Gate:
    """The process-wide gate for the configured MLflow URI and catalog."""
    uri = get_settings().resolved_mlflow_uri + "|" + get_settings().resolved_catalog_url
    with _gates_lock:
        if uri not in _gates:
            _gates[uri] = Gate()
        return _gates[uri]


def gate(
    name: str, alias: str | None = None, *, version: str | int | None = None, fresh: bool = False
) -> GateDecision:
    """Allowed or denied for ``name`` at ``alias`` (or a pinned ``version``), with reasons."""
    return default_gate()(name, alias, version=version, fresh=fresh)


def clear_gate_cache() -> None:
    """Forget every cached decision (after a revoke in this process, in tests)."""
    with _gates_lock:
        for g in _gates.values():
            g.clear()
