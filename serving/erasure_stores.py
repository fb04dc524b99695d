"""Serving's patient stores (:class:`imaging.compliance.holdings.PatientStore`), declared as
``radgate.patient_stores`` entry points so that erasure and retention reach them:

- ``served-inputs``: the sealed input DICOM (and result view) serving keeps while a reviewer's
  feedback may come (``monitoring/pending``, ``monitoring/views``), attributed by the PatientID
  inside the sealed input, which only serving's key opens;
- ``fhir-outbox``: the DiagnosticReport bundles queued, sent or refused for the EMR and each
  result's local facts, attributed by the facts' patient (original identifier) or their keyed
  erasure lookup (when the EMR sees a pseudonym).
"""

from __future__ import annotations

import json
import re
import warnings
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from sqlalchemy import select

from governance.catalog import open_catalog
from governance.keyring import SERVING_STORE, KeyMissing, load_store_key
from governance.keys import KeyError_
from governance.settings import Settings
from imaging.compliance.holdings import Holding, PatientQuery, unreadable_item

__all__ = ["FhirOutboxStore", "ServedInputsStore"]


def _patient_of(data: bytes) -> str:
    from pydicom import dcmread

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    return str(ds.get("PatientID", "")).strip()


#: How the EMR's pseudonym of a patient looks (``serving.interop.emr``: 32 hex digits).
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ServedInputsStore:
    """Sealed inputs and result views of served requests awaiting feedback."""

    name = "served-inputs"

    def find(self, query: PatientQuery) -> Holding:
        from serving.monitoring.models import LiveRecord
        from serving.monitoring.sealing import RECORD_INPUT, pending_input_path

        holding = Holding(self.name)
        folder = query.settings.home / "monitoring" / "pending"
        try:  # serving's own key seals these: the erasing process must hold it to search them
            serving = load_store_key(SERVING_STORE, query.settings, create=False)
        except KeyMissing as exc:
            if folder.exists() and any(folder.iterdir()):
                raise KeyError_(f"searching served inputs needs the serving-store key: {exc}") from exc
            return holding
        with open_catalog(query.settings).session() as session:
            request_ids = list(
                session.scalars(select(LiveRecord.request_id).where(LiveRecord.input_expires_at.isnot(None)))
            )
        for request_id in request_ids:
            path = pending_input_path(request_id, query.settings)
            if not path.exists():
                continue
            try:
                data = serving.unseal(path.read_bytes(), request_id.encode(), record=RECORD_INPUT)
                if _patient_of(data) == query.patient_id.strip():
                    holding.items.append(request_id)
            except Exception as exc:  # reported, not skipped: the input may be this patient's
                holding.unreadable.append(unreadable_item(self.name, path.stem, exc))
        return holding

    def erase(self, holding: Holding) -> int:
        from governance.settings import get_settings
        from serving.monitoring.sealing import pending_input_path, view_path

        settings = get_settings()
        for request_id in holding.items:
            pending_input_path(request_id, settings).unlink(missing_ok=True)
            view_path(request_id, settings).unlink(missing_ok=True)
        return holding.count

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        """Inputs kept past their feedback window, and sealed inputs no record names."""
        from serving.monitoring.models import LiveRecord
        from serving.monitoring.sealing import pending_input_path

        folder = settings.home / "monitoring" / "pending"
        overdue, known = 0, set()
        with open_catalog(settings).session() as session:
            rows = session.execute(
                select(LiveRecord.request_id, LiveRecord.input_expires_at).where(
                    LiveRecord.input_expires_at.isnot(None)
                )
            ).all()
        for request_id, expires in rows:
            assert expires is not None  # selected on it
            path = pending_input_path(request_id, settings)
            known.add(path.name)
            if path.exists() and _aware(expires) < now:
                overdue += 1
        orphans = [p for p in folder.glob("*.sealed") if p.name not in known] if folder.exists() else []
        return {"pending_inputs_overdue": overdue, "pending_inputs_orphaned": len(orphans)}


class FhirOutboxStore:
    """FHIR results for the EMR: bundles (pending, sent, refused) and their local facts."""

    name = "fhir-outbox"

    @staticmethod
    def _root(settings: Settings) -> Path:
        from serving.config import ServeConfigError, load_serve_config

        try:
            fhir = load_serve_config().fhir
        except (ServeConfigError, OSError, ValueError):
            fhir = None
        return fhir.outbox if fhir is not None and fhir.outbox is not None else settings.home / "fhir"

    def find(self, query: PatientQuery) -> Holding:
        from serving.interop.emr import erasure_lookup

        holding = Holding(self.name)
        folder = self._root(query.settings) / "results"
        if not folder.is_dir():
            return holding
        patient = query.patient_id.strip()
        lookup = erasure_lookup(query.key, patient)
        for path in sorted(folder.glob("*.json")):
            try:
                facts = json.loads(path.read_text())
                named = str(facts["patient"])
                if facts.get("erasure_lookup"):  # the EMR sees a pseudonym: match the keyed lookup
                    mine = facts["erasure_lookup"] == lookup
                else:  # the EMR sees the original identifier ([issuer|]PatientID)
                    mine = named == patient or named.endswith(f"|{patient}")
                    if not mine and "erasure_lookup" not in facts and _PSEUDONYM.fullmatch(named):
                        # written before the lookup existed, under a pseudonym: cannot tell whose
                        raise LookupError("a pseudonymous result without an erasure lookup")
                if mine:
                    holding.items.append(str(facts["result_id"]))
            except Exception as exc:  # reported, not skipped: the result may be this patient's
                holding.unreadable.append(unreadable_item(self.name, path.stem, exc))
        return holding

    def _files(self, root: Path, result_id: str) -> list[Path]:
        from serving.interop.emr import facts_path
        from serving.interop.outbox import Outbox

        outbox = Outbox(root)
        files = [facts_path(outbox, result_id)]
        safe = Outbox.file_key(result_id)
        for folder in (outbox.pending_dir, outbox.sent_dir, outbox.refused_dir):
            if folder.is_dir():
                files.extend(p for p in folder.iterdir() if f"-{safe}-" in p.name)
        return files

    def erase(self, holding: Holding) -> int:
        from governance.settings import get_settings

        root = self._root(get_settings())
        for result_id in holding.items:
            for path in self._files(root, result_id):
                path.unlink(missing_ok=True)
        return holding.count

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        return {}  # bundles are the EMR's record; erasure, not a retention limit, removes them
