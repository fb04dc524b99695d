"""Serving: Ray Serve app behind the governance gate, Triton, monitoring, feedback, web UI."""

__all__: list[str] = []
