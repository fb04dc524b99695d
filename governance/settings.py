"""Platform settings, read from the environment (``RADGATE_*``) or a ``.env`` file.

Settings live in the lowest layer (``governance``) so every package can read them without
importing the CLI; ``radgate.settings`` re-exports them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Where RadGate keeps its state and which backends it talks to.

    Everything defaults to embedded stores under ``home``; each backend is switched to a
    scale-out service by one variable (a PostgreSQL URL, an ``s3://`` URL, ``RAY_ADDRESS``...).
    """

    model_config = SettingsConfigDict(env_prefix="RADGATE_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".radgate"), description="State directory (RADGATE_HOME).")
    catalog_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default SQLite under home."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking/registry URI; default SQLite under home."
    )
    object_store: str | None = Field(
        default=None, description="Root of the content-addressed store (path or fsspec URL)."
    )
    key_file: Path | None = Field(default=None, description="Project key file; default home/keys.")
    project_key: SecretStr | None = Field(
        default=None, description="Project key as 64 hex chars; overrides key_file when set."
    )
    max_instance_bytes: int = Field(
        default=2 * 1024**3, description="Inputs larger than this are quarantined unread."
    )
    max_decoded_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Cap on the decoded pixels of one instance."
    )
    ray_address: str | None = Field(default_factory=lambda: os.environ.get("RAY_ADDRESS"))
    triton_url: str | None = None
    audit_witness: str | None = Field(
        default=None,
        description=(
            "External witness of the signed audit head: a path to an append-only file (another"
            " disk or a remote mount, chattr +a) or syslog:HOST:PORT (UDP, RFC 5424)."
        ),
    )
    audit_head: Path | None = Field(
        default=None,
        description=(
            "The signed audit head anchor file (RADGATE_AUDIT_HEAD; default home/audit/head.json,"
            " its checkpoint beside it). A process that signs no anchor (a restricted writer:"
            " serving, training) reads the audit writer's, e.g. from a shared read-only mount."
        ),
    )
    viewer_url: str | None = Field(
        default=None,
        description=(
            "The site's study viewer as a URL template with {study} (the StudyInstanceUID), e.g."
            " an OHIF behind the PACS: https://pacs.example/ohif/viewer?StudyInstanceUIDs={study}."
            " The reviewer UI links each served case to its study there (RADGATE_VIEWER_URL)."
        ),
    )

    @field_validator("viewer_url")
    @classmethod
    def _viewer_template(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if "{study}" not in value or not value.startswith(("http://", "https://")):
            raise ValueError("viewer_url must be an http(s) URL with a {study} placeholder")
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_object_store(self) -> str:
        return self.object_store or str(self.home / "store")

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.home / "keys" / "project.key"

    @property
    def audit_head_file(self) -> Path:
        return self.audit_head or self.home / "audit" / "head.json"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache after changing the env)."""
    return Settings()
