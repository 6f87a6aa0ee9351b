"""Quality-control report: Markdown and HTML pages with overlay figures.

For each shown case and label, one PNG holds axial, coronal and sagittal slices through the
label's centroid (the reference's, or the prediction's when the reference lacks the label), in
RAS-canonical orientation with the true voxel aspect ratio: the reference contour in green, the
prediction contour in red, over the image when one is known (manifest mode) and over the
reference label map in grey otherwise. The worst cases by mean Dice are shown first.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from medseg.io import load_volume
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.metrics.evaluate import (
    CasePair,
    Evaluation,
    load_label_volume,
    resample_to_reference,
)

logger = logging.getLogger(__name__)

TABLE_KEYS = ("dice", "iou", "hd95", "assd", "nsd", "vol_diff_pct")


def _canonical(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array reoriented to RAS axis order and its spacing along the new axes (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return nib.orientations.apply_orientation(arr, ornt), spacing[ornt[:, 0].astype(int)]


def overlay_figure(
    image: np.ndarray | None,
    ref: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    title: str,
    path: Path,
) -> Path:
    """Save a three-panel overlay PNG (axial, coronal, sagittal through the centroid).

    Parameters
    ----------
    image
        Background scan ``(I, J, K)`` in RAS axis order, or ``None`` (reference shown in grey).
    ref, pred
        Boolean masks ``(I, J, K)`` in RAS axis order (same grid as ``image``).
    spacing
        Voxel size in mm along the three axes.
    title
        Figure title.
    path
        Output PNG, written atomically.
    """
    src = ref if ref.any() else pred
    c = np.round(ndimage.center_of_mass(src)).astype(int) if src.any() else np.array(ref.shape) // 2
    # Without a scan, the reference label map in mid grey is the background.
    bg = image if image is not None else ref.astype(np.float32) * 0.5
    lims = (None, None) if image is not None else (0.0, 1.0)
    sx, sy, sz = spacing
    views = (
        ("axial", np.s_[:, :, c[2]], sy / sx),
        ("coronal", np.s_[:, c[1], :], sz / sx),
        ("sagittal", np.s_[c[0], :, :], sz / sy),
    )
    # The object-oriented Figure with an Agg canvas: no pyplot global state, no GUI backend.
    fig = Figure(figsize=(12, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, sl, aspect) in zip(axes, views, strict=True):
        ax.imshow(
            bg[sl].T,
            cmap="gray",
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
            vmin=lims[0],
            vmax=lims[1],
        )
        for mask, color in ((ref, "lime"), (pred, "red")):
            m = mask[sl].T.astype(np.float32)
            if m.any() and (~m.astype(bool)).any():
                ax.contour(m, levels=[0.5], colors=color, linewidths=1.0)
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(f"{title}  (green: reference, red: prediction)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return path


def _case_figures(pair: CasePair, labels: Sequence[int], fig_dir: Path) -> list[tuple[int, Path]]:
    ref = load_label_volume(pair.ref)
    pred = np.zeros(ref.spatial_shape, np.uint8)
    if pair.pred is not None:
        pred = resample_to_reference(load_label_volume(pair.pred), ref)
    image = None
    if pair.image is not None:
        img = load_volume(pair.image)
        if img.array.ndim == 3 and img.spatial_shape == ref.spatial_shape:
            image = _canonical(img.array.astype(np.float32), ref.affine)[0]
    r, spacing = _canonical(ref.array, ref.affine)
    p, _ = _canonical(pred, ref.affine)
    out = []
    for lab in labels:
        rm, pm = r == lab, p == lab
        if not (rm.any() or pm.any()):
            continue
        png = fig_dir / f"{pair.case_id}_label{lab}.png"
        sp = tuple(float(s) for s in spacing)
        overlay_figure(image, rm, pm, sp, f"{pair.case_id} label {lab}", png)
        out.append((lab, png))
    return out


def _worst_cases(ev: Evaluation, max_cases: int) -> list[CasePair]:
    mean_dice: dict[str, list[float]] = {}
    for row in ev.rows:
        mean_dice.setdefault(row["case"], []).append(float(row["dice"]))
    order = sorted(ev.cases, key=lambda p: float(np.mean(mean_dice.get(p.case_id, [1.0]))))
    return order[:max_cases]


def _fmt(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return f"- (inf: {stats['n_inf']})"
    text = f"{stats['mean']:.4g} ± {stats['std']:.3g} (median {stats['median']:.4g})"
    return text + (f", inf: {stats['n_inf']}" if stats["n_inf"] else "")


def _summary_table(ev: Evaluation, summary: dict[str, Any]) -> list[list[str]]:
    rows = [["label", *TABLE_KEYS]]
    for lab in ev.labels:
        stats = summary["labels"][str(lab)]
        name = ev.label_names.get(lab, "")
        rows.append([f"{lab} {name}".strip()] + [_fmt(stats[k]) for k in TABLE_KEYS if k in stats])
    return rows


def write_report(
    ev: Evaluation, summary: dict[str, Any], out_dir: Path, *, max_cases: int = 20
) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``.

    Parameters
    ----------
    ev
        The evaluation (rows and case paths; files are read again for the figures).
    summary
        Output of :func:`medseg.metrics.summary.summarize`.
    out_dir
        Report folder.
    max_cases
        Figures are drawn for at most this many cases, worst mean Dice first.

    Returns
    -------
    tuple[Path, Path]
        The Markdown and HTML files.
    """
    out_dir = Path(out_dir)
    figs: list[tuple[str, int, Path]] = []
    for pair in _worst_cases(ev, max_cases):
        for lab, png in _case_figures(pair, ev.labels, out_dir / "figures"):
            figs.append((pair.case_id, lab, png))
    table = _summary_table(ev, summary)
    notes = [
        f"{summary['n_cases']} cases; tolerance {summary.get('tolerance_mm')} mm; "
        f"HD95: {summary.get('hd95_convention', '')}.",
        "Statistics over finite values; `inf` counts cases where one mask is empty.",
    ]
    if ev.missing:
        notes.append(f"Missing predictions (scored as empty): {', '.join(ev.missing)}.")
    if ev.resampled:
        notes.append(f"Resampled onto the reference grid: {', '.join(ev.resampled)}.")
    if ev.failed:
        notes.append(f"Not scored (failed): {', '.join(f['case'] for f in ev.failed)}.")
    if ev.unmatched:
        notes.append(f"Not scored (no reference): {', '.join(ev.unmatched)}.")
    md = ["# Segmentation evaluation", "", *notes, "", "| " + " | ".join(table[0]) + " |"]
    md.append("|" + "---|" * len(table[0]))
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    md += ["", "## Quality control (worst cases first)", ""]
    md += [f"### {c} label {lab}\n\n![{c} label {lab}](figures/{p.name})\n" for c, lab, p in figs]
    body = ["<h1>Segmentation evaluation</h1>"] + [f"<p>{html.escape(n)}</p>" for n in notes]
    body.append("<table border='1' cellpadding='4'>")
    for i, r in enumerate(table):
        tag = "th" if i == 0 else "td"
        body.append("<tr>" + "".join(f"<{tag}>{html.escape(x)}</{tag}>" for x in r) + "</tr>")
    body.append("</table><h2>Quality control (worst cases first)</h2>")
    body += [
        f"<h3>{html.escape(c)} label {lab}</h3><img src='figures/{html.escape(p.name)}'>"
        for c, lab, p in figs
    ]
    page = "<!doctype html><html><head><meta charset='utf-8'><title>medseg evaluation</title>"
    page += "</head><body>" + "\n".join(body) + "</body></html>\n"
    md_path = atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    html_path = atomic_write_text(out_dir / "report.html", page)
    return md_path, html_path
