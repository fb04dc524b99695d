"""Attack tests: real sockets against real RadGate processes on 127.0.0.1 (the integration
fixtures: a ``radgate gateway`` subprocess, Orthanc, dcmtk)."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 (fixtures)
    clean_orthanc,
    dicom_env,
    orthanc,
    orthanc_credentials_env,
    start_gateway,
)
