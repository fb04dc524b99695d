"""The interop settings of the serving config: the documented examples validate, insecure or
malformed ones are refused with a clear message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serving.config import DEFAULT_CONFIG, ServeConfig
from serving.interop import AtnaExportConfig, FhirConfig


def _uncommented_interop(text: str) -> dict[str, object]:
    """The commented fhir/atna/ups blocks of the default config, uncommented."""
    lines = []
    taking = False
    for line in text.splitlines():
        if re.match(r"^# (fhir|atna|ups):", line):
            taking = True
        elif not line.startswith("#   "):
            taking = False
        if taking:
            lines.append(line[2:].split("  #")[0].split(" # ")[0].rstrip())
    return yaml.safe_load("\n".join(lines))


def test_documented_interop_settings_validate() -> None:
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    blocks = _uncommented_interop(DEFAULT_CONFIG.read_text())
    assert set(blocks) == {"fhir", "atna", "ups"}
    config = ServeConfig.model_validate({**base, **blocks})
    assert config.fhir is not None and config.fhir.identifiers == "deidentified"
    assert config.atna is not None and config.atna.syslog.startswith("tls://")
    assert config.ups is not None and config.ups.tasks == {"CHEST-AI": "chest-opacity"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://emr.example/fhir", "https"),
        ("ftp://emr.example/fhir", "http(s)"),
        ("https:///fhir", "http(s)"),
    ],
)
def test_fhir_url_must_be_https_off_loopback(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        FhirConfig(url=url)
    assert FhirConfig(url="http://127.0.0.1:8080/fhir/").url == "http://127.0.0.1:8080/fhir"


def test_syslog_destination_is_checked(tmp_path: Path) -> None:
    from governance.audit.atna import SyslogDestination, SyslogError

    config = AtnaExportConfig(syslog="tls://127.0.0.1:6514", ca_file=tmp_path / "ca.pem")
    assert SyslogDestination.parse(config.syslog).transport == "tls"
    for bad in ("syslog://h:1", "tcp://host", "udp://:514"):
        with pytest.raises(SyslogError):
            SyslogDestination.parse(bad)


def test_atna_backlog_is_a_gauge_and_nothing_is_dropped() -> None:
    from prometheus_client import REGISTRY

    from governance.audit import record
    from serving.interop import start_interop

    for index in range(3):
        record("alice", "serve.predict", f"model:m/{index}", {"n": 1})
    running = start_interop(
        None, AtnaExportConfig(syslog="tcp://127.0.0.1:9", retry_initial_s=0.05), interval_s=0.05
    )
    try:
        # Port 9 refuses: every entry stays queued behind the cursor, the gauge says how many.
        assert REGISTRY.get_sample_value("radgate_interop_backlog", {"queue": "atna"}) == 3
        record("alice", "serve.predict", "model:m/3", {"n": 1})
        assert REGISTRY.get_sample_value("radgate_interop_backlog", {"queue": "atna"}) == 4
    finally:
        running.stop()
