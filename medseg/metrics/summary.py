"""Summaries of per-case rows and their files: ``metrics.csv`` and ``summary.json``.

Statistics per label and metric: ``mean``, ``median``, ``std`` (population), ``min``, ``max``
over the **finite** values only; ``n`` (cases), ``n_inf`` (infinite values: distances of cases
where one mask is empty) and ``n_nan`` are reported beside them, so infinite distances are never
silently averaged and never silently dropped. ``mean`` is ``null`` when no value is finite.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_write_text
from medseg.metrics.case import METRIC_KEYS
from medseg.metrics.lesion import LESION_KEYS
from medseg.metrics.panoptic import PANOPTIC_KEYS

ID_KEYS = ("case", "label", "missing")
HD95_CONVENTION = "max of the 95th percentiles of the two directed surface-distance sets (MONAI)"


def metric_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Metric columns present in ``rows``, in the canonical order."""
    present = {k for r in rows for k in r}
    return [k for k in (*METRIC_KEYS, *LESION_KEYS, *PANOPTIC_KEYS) if k in present]


def describe(values: Sequence[float]) -> dict[str, Any]:
    """Statistics of finite values with counts of infinite and NaN ones."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    stats: dict[str, Any] = {
        "n": int(arr.size),
        "n_inf": int(np.isinf(arr).sum()),
        "n_nan": int(np.isnan(arr).sum()),
    }
    for name, fn in (
        ("mean", np.mean),
        ("median", np.median),
        ("std", np.std),
        ("min", np.min),
        ("max", np.max),
    ):
        stats[name] = float(fn(finite)) if finite.size else None
    return stats


def summarize(
    rows: Sequence[dict[str, Any]], labels: Sequence[int], **extra: Any
) -> dict[str, Any]:
    """Per-label statistics of every metric (see the module docstring).

    Parameters
    ----------
    rows
        Rows from :func:`medseg.metrics.evaluate.evaluate_cases` (``case``, ``label``, metrics).
    labels
        Labels to summarise.
    extra
        Extra top-level entries (settings, missing cases, ...).

    Returns
    -------
    dict
        ``{"labels": {label: {metric: stats}}, "n_cases": int, **extra}``.
    """
    keys = metric_keys(rows)
    per_label: dict[str, Any] = {}
    for lab in labels:
        sel = [r for r in rows if r["label"] == lab]
        per_label[str(lab)] = {k: describe([r[k] for r in sel if k in r]) for k in keys}
    cases = {r.get("case") for r in rows}
    return {"n_cases": len(cases), "labels": per_label, **extra}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text, one line per row; infinite values are written as ``inf``."""
    cols = [k for k in ID_KEYS if any(k in r for r in rows)] + metric_keys(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow([_cell(r[c]) if c in r else "" for c in cols])
    return buf.getvalue()


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by strings so the JSON is standard (no ``Infinity``)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def write_metrics_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write ``metrics.csv`` atomically."""
    return atomic_write_text(Path(path), rows_to_csv(rows))


def write_summary_json(summary: dict[str, Any], path: Path) -> Path:
    """Write ``summary.json`` atomically (standard JSON: non-finite numbers as strings)."""
    return atomic_write_text(Path(path), json.dumps(_json_safe(summary), indent=2) + "\n")
