"""Training: datasets to MONAI transforms, networks, Lightning on Ray Train, evaluation, explain."""

__all__: list[str] = []
