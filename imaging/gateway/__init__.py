"""PACS integration: C-STORE SCP and STOW-RS intake, pull from a PACS, push results back.

Every received instance goes through ``imaging.ingest`` (validation, de-identification,
content-addressed store, lineage) before the sender hears success.
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from imaging.gateway.config import (
        AllowedPeer,
        ConfigError,
        DicomListener,
        GatewayConfig,
        HttpListener,
        PacsPeer,
        load_config,
    )
    from imaging.gateway.scp import STORAGE_TRANSFER_SYNTAXES, GatewayStats, StorageSCP
    from imaging.gateway.status import StoreStatus, Verdict

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "AllowedPeer",
    "ConfigError",
    "DicomListener",
    "GatewayConfig",
    "GatewayStats",
    "HttpListener",
    "PacsPeer",
    "StorageSCP",
    "StoreStatus",
    "Verdict",
    "load_config",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
