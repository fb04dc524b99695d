"""Monitoring: live features of served requests, drift against the training reference, alerts,
clinician feedback and feedback labels for the next dataset version.

Integration (serving)
---------------------
At model load (once per served version)::

    from serving.monitoring import LiveRecorder
    recorder = LiveRecorder.for_run(model.name, model.version, model.run_id)   # reads the reference profile
    # FileNotFoundError: the version's run has no profile -> `radgate monitor profile NAME/VERSION`

Per request (no PHI is stored; ``request_id`` is serving's own id, returned to the caller)::

    from training.reference_profile import attributes_from_dataset, embed_and_score
    probs, embedding = embed_and_score(model.module, model.preprocess(dicom_bytes))  # one forward
    image = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    recorder.record(request_id, image, attributes_from_dataset(ds, load_project_key()),
                    probs[0].tolist(), embedding[0], input_bytes=dicom_bytes)

``input_bytes`` is sealed (serving store key) until feedback or ``feedback.pending_input_hours``;
pass ``None`` to keep nothing. :func:`serving.monitoring.served.observe_dicom` does all of the
above in one call.

Routes: ``app.include_router(feedback_router())`` adds ``POST /v1/feedback`` (clinical-reviewer).
Metrics: gauges are in ``prometheus_client``'s default registry (mount ``make_asgi_app()``).
Periodic drift: ``DriftScheduler(interval_s=3600).start()`` in the ingress, or call
``run_drift_job()`` from any scheduler; it also purges expired sealed inputs.

Integration (training)
----------------------
After fitting, with the train split's materialised rows::

    from training.reference_profile import compute_reference_profile, log_reference_profile
    log_reference_profile(run_id, compute_reference_profile(network, rows["train"], spec,
                                                            label_names=label_names))

CLI: ``radgate monitor drift|profile|replay`` and ``radgate feedback submit|export|dataset``
(module ``serving.monitoring.cli``). Settings: ``configs/monitoring/default.yaml``.
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from serving.monitoring.alerts import publish_gauges, raise_alert, sign_payload, verify_signature
    from serving.monitoring.config import MonitoringConfig, load_monitoring_config, parse_window
    from serving.monitoring.drift import DriftResult, FeatureTest, adjust_pvalues, compare
    from serving.monitoring.feedback import (
        FeedbackIn,
        FeedbackOut,
        InputStatus,
        export_feedback_labels,
        feedback_dataset,
        feedback_router,
        submit_feedback,
    )
    from serving.monitoring.job import DriftCheck, DriftScheduler, NoLiveData, run_drift_check, run_drift_job
    from serving.monitoring.live import (
        LiveRecorder,
        MonitoringError,
        purge_expired_inputs,
        record_live_features,
    )

__all__ = [
    "DriftCheck",
    "DriftResult",
    "DriftScheduler",
    "FeatureTest",
    "FeedbackIn",
    "FeedbackOut",
    "InputStatus",
    "LiveRecorder",
    "MonitoringConfig",
    "MonitoringError",
    "NoLiveData",
    "adjust_pvalues",
    "compare",
    "export_feedback_labels",
    "feedback_dataset",
    "feedback_router",
    "load_monitoring_config",
    "parse_window",
    "publish_gauges",
    "purge_expired_inputs",
    "raise_alert",
    "record_live_features",
    "run_drift_check",
    "run_drift_job",
    "sign_payload",
    "submit_feedback",
    "verify_signature",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
