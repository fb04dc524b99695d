"""3D segmentation: spec of a model, MONAI transforms and networks, Lightning module, training.

Heavy libraries (torch, MONAI) are imported by the submodules that need them, not here.
"""

from training.segmentation.spec import (
    SEGMENTATION_ARTIFACT,
    SEGMENTATION_TASK,
    TASK_TAG,
    SegmentationIntensity,
    SegmentationNetwork,
    SegmentationSpec,
    SegmentationSpecError,
    check_roi_for_network,
)

__all__ = [
    "SEGMENTATION_ARTIFACT",
    "SEGMENTATION_TASK",
    "TASK_TAG",
    "SegmentationIntensity",
    "SegmentationNetwork",
    "SegmentationSpec",
    "SegmentationSpecError",
    "check_roi_for_network",
]
