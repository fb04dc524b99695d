"""DICOM and image results of AI models: display windowing, overlays (PNG, Secondary Capture),
classification SR (IHE AIR), saliency SEG, segmentation (DICOM SEG + volumetric SR)."""

from imaging.results.display import DisplayImage, ResultImageError, display_image, linear_window
from imaging.results.overlay import Colormap, OverlayCaption, OverlayError, blend_overlay, resize_map
from imaging.results.png import render_overlay_png, write_overlay_png
from imaging.results.saliency import (
    SaliencySegmentationError,
    attention_region,
    build_saliency_segmentation,
)
from imaging.results.secondary_capture import (
    AlgorithmIdentity,
    SecondaryCaptureError,
    build_overlay_secondary_capture,
    patient_orientation_of,
    write_secondary_capture,
)
from imaging.results.segmentation import (
    SegmentationResultError,
    build_segmentation,
    build_segmentation_results,
    build_volume_report,
)
from imaging.results.structured_report import (
    RADGATE_SCHEME,
    ModelApproval,
    StructuredReportError,
    build_result_report,
)

__all__ = [
    "RADGATE_SCHEME",
    "AlgorithmIdentity",
    "Colormap",
    "DisplayImage",
    "ModelApproval",
    "OverlayCaption",
    "OverlayError",
    "ResultImageError",
    "SaliencySegmentationError",
    "SecondaryCaptureError",
    "SegmentationResultError",
    "StructuredReportError",
    "attention_region",
    "blend_overlay",
    "build_overlay_secondary_capture",
    "build_result_report",
    "build_saliency_segmentation",
    "build_segmentation",
    "build_segmentation_results",
    "build_volume_report",
    "display_image",
    "linear_window",
    "patient_orientation_of",
    "render_overlay_png",
    "resize_map",
    "write_overlay_png",
    "write_secondary_capture",
]
