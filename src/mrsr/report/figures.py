"""The report's figures: the Figure-3-style visual comparison (Table 2's methods in its order, PSNR/SSIM
per panel, error maps on one colour scale), training curves and per-image metric distributions, drawn
with matplotlib's Agg backend (no display) and embedded as PNG data URIs.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mrsr.config import Job  # noqa: E402
from mrsr.metrics import crop_border, psnr, ssim  # noqa: E402
from mrsr.modelspec import MODEL_SPECS, display_name, report_order  # noqa: E402


def png_bytes_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_data_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png_bytes_uri(buf.getvalue())


def empty_png(message: str) -> bytes:
    """A small PNG that says why there is no figure (the workflow's figure outputs always exist)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def figure3_panels(names: list[str]) -> list[tuple[str, str]]:
    """Figure 3's method panels: (job name, display name) in Table 2's order and with its names.

    ``names``: example job names of one scale. As in Table 2, "Ours" is the multi-resolution
    network (the other strategies are left out) and methods Table 2 does not list are left out.
    """
    by_method = {}
    for name in names:
        job = Job.from_name(name)
        if job.strategy == MODEL_SPECS[job.model].table_strategy:
            by_method[job.model] = name
    return [(by_method[m], display_name(m)) for m in report_order() if m in by_method]


def _error_scale(errors: list[np.ndarray]) -> float:
    """One colour scale for every error map: the 99.5th percentile of all errors, two significant digits up."""
    top = max(float(np.percentile(e, 99.5)) for e in errors) if errors else 0.0
    top = max(top, 1e-3)
    step = 10.0 ** (np.floor(np.log10(top)) - 1)
    return float(np.ceil(top / step) * step)


def figure3(examples: dict[str, dict[str, np.ndarray]], border: int = 0) -> str | None:
    """The same slice and zoomed region: HR first, then every method of Table 2 in its order, with error maps.

    Each method's panel is titled with its PSNR and SSIM on this slice (the metric recipe, ``border``
    pixels cropped, as in the per-image CSVs); the error maps share one colour scale and a colour bar.
    """
    panels = figure3_panels(list(examples))
    if not panels:
        return None
    hr = np.asarray(examples[panels[0][0]]["hr"], np.float64)
    h, w = hr.shape
    zoom = (slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3))
    images = [np.clip(np.asarray(examples[name]["sr"], np.float64), 0, 1) for name, _ in panels]
    errors = [np.abs(img - hr)[zoom] for img in images]
    vmax = _error_scale(errors)
    # About 1.5 inches a panel: eight panels fill a 1280-pixel page at dpi 110 without shrinking the titles.
    fig, axes = plt.subplots(3, len(panels) + 1, figsize=(1.5 * (len(panels) + 1), 5.6), layout="constrained")
    axes = np.asarray(axes).reshape(3, -1)
    slice_id = examples[panels[0][0]].get("slice_id")
    columns = [("HR (reference)" + (f"\n{slice_id}" if slice_id is not None else ""), hr, None)]
    for (name, title), img in zip(panels, images):
        ref, est = crop_border(hr, border), crop_border(img, border)
        columns.append((f"{title}\n{psnr(ref, est):.2f} dB / {ssim(ref, est):.4f}", img, np.abs(img - hr)[zoom]))
    for col, (title, img, err) in enumerate(columns):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, col].add_patch(plt.Rectangle((zoom[1].start, zoom[0].start), w // 3, h // 3, fill=False, ec="yellow", lw=1))
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(img[zoom], cmap="gray", vmin=0, vmax=1)
        if err is not None:
            shown = axes[2, col].imshow(err, cmap="inferno", vmin=0, vmax=vmax)
        for r in range(3):
            axes[r, col].axis("off")
    axes[2, 0].text(0.5, 0.5, "|SR - HR|\nof the zoom\n(shared scale)", ha="center", va="center", fontsize=8,
                    transform=axes[2, 0].transAxes)
    bar = fig.colorbar(shown, ax=axes[2, 1:].tolist(), location="bottom", shrink=0.6, aspect=40, extend="max")
    bar.set_label("|SR - HR| (intensities 0-1); titles: PSNR / SSIM of the whole slice", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return png_data_uri(fig)


def history_figure(histories: dict[str, pd.DataFrame], column: str, ylabel: str, log: bool = False) -> bytes | None:
    """PNG of one history column (``loss`` or ``val_psnr``) per epoch for every job, or None without histories.

    Loss (about 1e-3) and PSNR (about 36 dB) get a figure each: on one axis either would be flat.
    """
    if not histories:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    # tab20: 18 jobs need more distinct colours than the default cycle's 10.
    colours = plt.get_cmap("tab20").colors
    for i, (name, hist) in enumerate(histories.items()):
        ax.plot(hist["epoch"], hist[column], marker=".", label=name, color=colours[i % len(colours)])
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log" if log else "linear")
    # Beside the plot, not over the curves.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if len(histories) <= 12 else 2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def training_curves(histories: dict[str, pd.DataFrame]) -> dict[str, bytes | None]:
    """The two training-curve figures as PNG bytes: ``loss`` and ``val_psnr``."""
    return {"loss": history_figure(histories, "loss", "training loss", log=True),
            "val_psnr": history_figure(histories, "val_psnr", "validation PSNR (dB)")}


def distributions(per_image: dict[str, pd.DataFrame]) -> str | None:
    if not per_image:
        return None
    names = sorted(per_image)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(names)), 3.8))
    ax1.boxplot([per_image[n]["psnr"] for n in names], showmeans=True)
    ax2.boxplot([per_image[n]["ssim"] for n in names], showmeans=True)
    for ax, label in ((ax1, "PSNR (dB)"), (ax2, "SSIM")):
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7, ha="right")
        ax.set_ylabel(label)
    fig.tight_layout()
    return png_data_uri(fig)
