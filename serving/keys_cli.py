"""``radgate keys``: create, rotate and migrate the separated keys (admin, audited).

``init`` creates every key file a deployment needs (then mount each only where it is used:
docs/SECURITY.md), the services' own audit writer keys included (``audit-writer-NAME.key`` for
gateway, serving and training, registered in ``audit-writers.json``). ``rotate`` replaces keys
and re-seals every store each one seals: the honest broker's pair (re-identification map,
quarantined inputs, erasure reasons), serving's store key (held inputs, result views, feedback
comments), the UI session key (every session ends) and the audit signing key (the chain is
verified and checkpointed under the new key); ``rotate --writer NAME`` revokes a service's
restricted audit writer key (a ``keys.writer.revoke`` entry: what that key signs afterwards is
forged) and registers a replacement (``--revoke-only``: none).
``migrate`` converts a ``RADGATE_HOME`` of an earlier release, where one project key sealed
and MACed everything, to the separated keys.

The pseudonym key is never rotated here: it derives UIDs, pseudonyms and date shifts, and a
new one would break longitudinal linkage.

Lives in ``serving`` because it re-seals serving's stores as well as intake's.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import typer

from governance.cli_support import fail, out

if TYPE_CHECKING:
    from governance.audit import AuditEntry

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(help="Separated keys: init, rotate, migrate.", no_args_is_help=True)

KINDS = ("broker", "serving-store", "ui-session", "audit-signing")


def _record(action: str, target: str, details: dict[str, object]) -> AuditEntry:
    from governance.audit import AuditLog
    from governance.auth.access import acting_principal

    principal = acting_principal()
    if principal is None:  # the command guard always sets it; refuse rather than audit anonymously
        raise fail("keys commands run only through the radgate CLI's authentication", 3)
    return AuditLog().append(principal.name, action, target, details, role=principal.role.value)


@keys_app.command("init")
def keys_init() -> None:
    """Create any missing key file (existing ones are kept); print what each protects."""
    from governance.keyring import (
        ARTIFACT_DIGEST,
        SERVING_STORE,
        UI_SESSION,
        ensure_service_writers,
        keys_dir,
        load_audit_signer,
        load_broker,
        load_store_key,
    )
    from governance.keys import load_project_key

    load_project_key()
    broker = load_broker(create=True)
    signer = load_audit_signer()
    load_store_key(SERVING_STORE)
    load_store_key(UI_SESSION)
    load_store_key(ARTIFACT_DIGEST)
    writers = ensure_service_writers()  # each service's own audit key, scoped to its entries
    directory = keys_dir()
    out.print(f"keys in {directory}:")
    for name in sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")):
        out.print(f"  {name}")
    _record(
        "keys.init", "keys", {"broker": broker.key_id, "audit": signer.key_id, "writers": sorted(writers)}
    )


@keys_app.command("rotate")
def keys_rotate(
    key: list[str] = typer.Option(
        [],
        "--key",
        help="broker | serving-store | ui-session | audit-signing (default: all four, unless --writer).",
    ),
    writer: list[str] = typer.Option(
        [],
        "--writer",
        help="A service's restricted audit writer (gateway, serving, training): revoke its key and "
        "register a new one (audit-writer-NAME.key, to mount in place of the old one).",
    ),
    revoke_only: bool = typer.Option(
        False, "--revoke-only", help="With --writer: revoke the key, register no replacement."
    ),
) -> None:
    """Rotate keys and re-seal every store each one seals (admin, audited).

    Pseudonyms, UIDs and date shifts do not change (their HMAC key is not rotated). A writer's key
    is revoked by a governance audit entry (``keys.writer.revoke``): entries that key signs after
    it are reported forged by ``audit verify`` and make the gate fail closed; earlier ones stay
    valid.
    """
    from governance.audit import AuditLog
    from governance.audit.keys import rotate_audit_key
    from governance.keyring import (
        SERVING_STORE,
        UI_SESSION,
        KeyMissing,
        StoreKey,
        load_store_key,
        store_key_path,
        write_secret_file,
    )
    from governance.keys import KeyError_
    from governance.settings import get_settings
    from imaging.keys_rotation import rotate_broker_key
    from serving.monitoring.sealing import reseal_serving_store

    chosen = list(dict.fromkeys(key)) or ([] if writer else list(KINDS))
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}: choose from {', '.join(KINDS)}", 2)
    if revoke_only and not writer:
        raise fail("--revoke-only needs --writer NAME", 2)
    settings = get_settings()
    try:
        for name in dict.fromkeys(writer):
            _rotate_writer(name, replace=not revoke_only)
        if "broker" in chosen:
            moved = rotate_broker_key(settings)
            out.print(
                f"broker key {moved.old_key_id} -> {moved.new_key_id}: re-sealed {moved.map_entries} "
                f"map entries, {moved.quarantined_files} quarantined inputs, "
                f"{moved.erasure_records} erasure records"
            )
            _record(
                "keys.rotate",
                f"broker-key:{moved.new_key_id}",
                {
                    "retired": moved.old_key_id,
                    "map_entries": moved.map_entries,
                    "quarantined_files": moved.quarantined_files,
                    "erasure_records": moved.erasure_records,
                },
            )
        if "serving-store" in chosen:
            old = load_store_key(SERVING_STORE, settings)
            new = StoreKey(SERVING_STORE, secrets.token_bytes(32))
            pending = store_key_path(SERVING_STORE, settings).with_name("serving-store.key.next")
            write_secret_file(pending, new.secret)

            def unseal(sealed: bytes, aad: bytes, record: str) -> bytes:
                return old.unseal(sealed, aad, record=record)

            counts = reseal_serving_store(unseal, new, settings)
            pending.replace(store_key_path(SERVING_STORE, settings))
            out.print(f"serving-store key {old.key_id} -> {new.key_id}: re-sealed {counts}")
            _record("keys.rotate", f"serving-store-key:{new.key_id}", {"retired": old.key_id, **counts})
        if "ui-session" in chosen:
            old_ui = load_store_key(UI_SESSION, settings)
            write_secret_file(store_key_path(UI_SESSION, settings), secrets.token_bytes(32))
            _purge_ui_sessions()
            new_ui = load_store_key(UI_SESSION, settings)
            out.print(f"ui-session key {old_ui.key_id} -> {new_ui.key_id}: every UI session ended")
            _record("keys.rotate", f"ui-session-key:{new_ui.key_id}", {"retired": old_ui.key_id})
        if "audit-signing" in chosen:
            change = rotate_audit_key(AuditLog(), settings)
            out.print(
                f"audit signing key {change.old_key_id} -> {change.new_key_id}: chain verified to "
                f"entry {change.head_seq} and checkpointed"
            )
            _record("keys.rotate", f"audit-key:{change.new_key_id}", {"retired": change.old_key_id})
    except (KeyMissing, KeyError_) as exc:
        raise fail(str(exc)) from exc


def _rotate_writer(name: str, *, replace: bool) -> None:
    """Revoke writer ``name``'s key in the chain, then in ``audit-writers.json``; a new key."""
    from governance.audit import AuditLog
    from governance.keyring import (
        REVOKE_WRITER,
        active_audit_writer,
        register_audit_writer,
        revoke_audit_writer,
    )

    old = active_audit_writer(name)  # KeyMissing: not registered, or revoked already
    log = AuditLog()
    recorded = [  # a run that could not update audit-writers.json recorded it already
        e.seq
        for e in log.entries(action=REVOKE_WRITER)
        if e.details.get("key_id") == old.key_id and log.verifier.unrestricted(e.key_id) and log.authentic(e)
    ]
    seq = (
        recorded[0]
        if recorded
        else _record(REVOKE_WRITER, f"audit-writer:{name}", {"writer": name, "key_id": old.key_id}).seq
    )
    out.print(f"audit writer {name}: key {old.key_id} revoked at audit entry {seq}")
    try:
        revoke_audit_writer(name, seq)
    except OSError as exc:  # e.g. the admin console's keys are read-only mounted secrets
        raise fail(
            f"the revocation is in the audit chain (entry {seq}: every verifier refuses what that key "
            f"signs later), but the key files here cannot be changed ({exc.strerror}): run this "
            "command again where they are writable (where make-secrets.sh made them) to mark the key "
            "revoked in audit-writers.json and make its replacement",
            1,
        ) from exc
    if replace:
        path = register_audit_writer(name, old.actions)
        new = active_audit_writer(name)
        out.print(f"  new key {new.key_id} in {path}: mount it as {name}'s audit-writer.key")
        out.print("  and give every verifier the new audit-writers.json")
        _record("keys.rotate", f"audit-writer:{name}", {"retired": old.key_id, "key_id": new.key_id})


def _purge_ui_sessions() -> None:
    try:
        from serving.ui.sessions import end_all_sessions
    except ImportError:
        return
    end_all_sessions()


@keys_app.command("migrate")
def keys_migrate() -> None:
    """Convert stores of an earlier release (one project key for everything) to the separated
    keys: re-seal to the broker and to serving's key, re-sign the audit chain (admin, audited)."""
    from governance.audit import AuditLog
    from governance.audit.keys import migrate_legacy_chain
    from governance.keyring import SERVING_STORE, STORE_MAGIC, KeyMissing, load_store_key
    from governance.keys import KeyError_, load_project_key, seal_key_path
    from governance.settings import get_settings
    from imaging.keys_rotation import migrate_broker_stores
    from serving.monitoring.sealing import reseal_serving_store

    settings = get_settings()
    try:
        legacy = load_project_key(settings, create=False)
        log = AuditLog()
        chain = migrate_legacy_chain(log, legacy)
        out.print(f"audit: re-signed {chain.entries} entries (chain verified to entry {chain.head_seq})")
        moved = migrate_broker_stores(legacy.legacy_unseal, settings)
        out.print(
            f"sealed to the broker: {moved.map_entries} map entries, {moved.quarantined_files} quarantined "
            f"inputs, {moved.erasure_records} erasure records"
        )
        serving = load_store_key(SERVING_STORE, settings)

        def unseal(sealed: bytes, aad: bytes, record: str) -> bytes:
            if sealed.startswith(STORE_MAGIC):
                return serving.unseal(sealed, aad, record=record)
            return legacy.legacy_unseal(sealed, aad)

        counts = reseal_serving_store(unseal, serving, settings)
        out.print(f"sealed under serving's key: {counts}")
        seal_key_path(settings).unlink(missing_ok=True)
    except (KeyMissing, KeyError_) as exc:
        raise fail(str(exc)) from exc
    _record(
        "keys.migrate",
        "keys",
        {
            "audit_resigned": chain.entries,
            "map_entries": moved.map_entries,
            "quarantined_files": moved.quarantined_files,
            "erasure_records": moved.erasure_records,
            **counts,
        },
    )


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
