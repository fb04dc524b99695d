"""Re-export of the platform settings (defined in ``governance.settings``)."""

from governance.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
