"""Training's patient store (:class:`imaging.compliance.holdings.ReviewStore`), declared as a
``radgate.patient_stores`` entry point so that erasure reaches it:

- ``mlflow-registry``: the MLflow runs and registered model versions trained on a dataset version
  that holds the patient (by their ``radgate.dataset_version`` tag). They hold no patient data
  but learned from it: erasure flags each ``radgate.erasure.review=required`` with a
  ``radgate.erasure.<id>`` note (erasure id and keyed subject), for governance to review.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from governance.audit import record
from governance.catalog import open_catalog
from governance.settings import Settings
from governance.tags import Tag
from imaging.compliance.holdings import (
    SHOWN_MODEL_VERSION,
    SHOWN_RUN,
    Erasure,
    Holding,
    PatientQuery,
    unreadable_item,
)
from imaging.compliance.stores import datasets_holding

__all__ = ["MlflowRegistryStore"]


class MlflowRegistryStore:
    """Runs and model versions trained on the patient's data, flagged for review by erasure."""

    name = "mlflow-registry"

    def find(self, query: PatientQuery) -> Holding:
        holding = Holding(self.name)
        with open_catalog(query.settings).session() as session:
            affected = {rec.id for rec, _, _ in datasets_holding(session, query.pseudonym)}
        uri = query.settings.resolved_mlflow_uri
        if not affected or (
            uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()
        ):
            return holding  # nothing trained on the patient, or no registry was ever written
        from governance.approvals.registry import registry_client

        client = registry_client(uri)
        models: list[dict[str, str]] = []
        token = None
        while True:
            page = client.search_model_versions(max_results=1000, page_token=token)
            for mv in page:
                dataset = (mv.tags or {}).get(Tag.DATASET_VERSION)
                if dataset in affected:
                    models.append(
                        {
                            "kind": SHOWN_MODEL_VERSION,
                            "name": mv.name,
                            "version": str(mv.version),
                            "dataset_version": dataset,
                        }
                    )
            token = page.token
            if not token:
                break
        models.sort(key=lambda m: (m["name"], int(m["version"])))
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = [
            {"kind": SHOWN_RUN, "run_id": run.info.run_id}
            for dataset in sorted(affected)
            for run in client.search_runs(
                experiments, filter_string=f"tags.`{Tag.DATASET_VERSION}` = '{dataset}'"
            )
        ]
        for shown in models + runs:
            holding.shown.append(shown)
            model = shown["kind"] == SHOWN_MODEL_VERSION
            holding.items.append(f"{shown['name']}/{shown['version']}" if model else shown["run_id"])
        return holding

    def flag(self, holding: Holding, erasure: Erasure) -> list[dict[str, str]]:
        from governance.approvals.registry import model_target, registry_client

        client = registry_client(erasure.settings.resolved_mlflow_uri)
        note = json.dumps({"erasure_id": erasure.id, "subject": erasure.subject})
        unflagged: list[dict[str, str]] = []
        for item, shown in zip(holding.items, holding.shown, strict=True):
            try:
                if shown["kind"] == SHOWN_MODEL_VERSION:
                    name, version = shown["name"], shown["version"]
                    client.set_model_version_tag(name, version, Tag.ERASURE_REVIEW, "required")
                    client.set_model_version_tag(name, version, f"{Tag.ERASURE_PREFIX}{erasure.id}", note)
                    record(
                        erasure.actor,
                        "model.erasure_flag",
                        model_target(name, version),
                        {"erasure_id": erasure.id, "dataset_version": shown["dataset_version"]},
                        role=erasure.role,
                    )
                else:
                    client.set_tag(item, Tag.ERASURE_REVIEW, "required")
                    client.set_tag(item, f"{Tag.ERASURE_PREFIX}{erasure.id}", note)
            except Exception as exc:  # reported, not skipped: it still learned from the patient
                unflagged.append(unreadable_item(self.name, item, exc))
        return unflagged

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        return {}  # models keep no patient data; erasure, not a retention limit, flags them
