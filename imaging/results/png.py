"""Reviewer PNG: windowed image with the attribution overlay, colour legend and provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imaging.results.overlay import Colormap, OverlayCaption, blend_overlay

__all__ = ["render_overlay_png", "write_overlay_png"]

_DISCLAIMER = "Attribution map: where the model output is sensitive. Not a diagnosis."


def render_overlay_png(
    image: np.ndarray,
    attribution: np.ndarray,
    caption: OverlayCaption,
    *,
    colormap: Colormap | str = Colormap.JET,
    threshold: float = 0.2,
    max_alpha: float = 0.5,
    side_by_side: bool = True,
) -> bytes:
    """PNG bytes: (optionally) the plain windowed image next to the overlay, a colour bar
    labelled with the normalised attribution scale, and the caption lines as title."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    rgb = blend_overlay(image, attribution, colormap=colormap, threshold=threshold, max_alpha=max_alpha)
    panels = 2 if side_by_side else 1
    aspect = image.shape[0] / max(image.shape[1], 1)
    figure = Figure(figsize=(4.2 * panels + 1.0, 4.2 * aspect + 1.2), dpi=110)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if side_by_side:
        axes[0].imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
        axes[0].set_title("image", fontsize=9)
    axes[-1].imshow(rgb, interpolation="antialiased")
    axes[-1].set_title(f"{caption.method} overlay", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=Colormap(colormap).value)
    bar = figure.colorbar(mappable, ax=list(axes), fraction=0.046, pad=0.02)
    bar.set_label(f"attribution (normalised; < {threshold:g} not shown)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle("\n".join(caption.lines()), fontsize=9)
    figure.text(0.01, 0.01, _DISCLAIMER, fontsize=7, color="0.3")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_overlay_png(
    path: Path | str,
    image: np.ndarray,
    attribution: np.ndarray,
    caption: OverlayCaption,
    **options: object,
) -> Path:
    """Write :func:`render_overlay_png` to ``path`` (atomically: temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = render_overlay_png(image, attribution, caption, **options)  # type: ignore[arg-type]
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(target)
    return target
