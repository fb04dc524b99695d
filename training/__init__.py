"""Training: datasets to MONAI transforms, networks, Lightning on Ray Train, evaluation, registration.

Heavy libraries (torch, MONAI, Ray, MLflow) are imported by the submodules, not here.
Entry points: :func:`training.run.train` (config -> evaluated, registered model version),
:func:`training.registry.load_model` (registered model -> torch module + preprocessing).
"""

__all__: list[str] = []
