"""Imaging: DICOM I/O, PS3.15 de-identification, ingestion, content-addressed store, datasets."""

__all__: list[str] = []
