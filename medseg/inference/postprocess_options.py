"""The decided post-processing as inference applies it: ``--crf/--no-crf`` overrides, whether
the CRF needs class probabilities, and the JSON description written into each sidecar."""

from __future__ import annotations

import dataclasses
from typing import Any


def needs_probabilities(post: Any | None) -> bool:
    """True when the post-processing configuration runs the dense CRF."""
    return post is not None and getattr(post, "crf", None) is not None


def with_crf_override(post: Any | None, crf: bool | None) -> Any | None:
    """Apply ``--crf/--no-crf`` to a post-processing configuration (``None``: as decided)."""
    if crf is None:
        return post
    from medseg.postprocessing import CRFConfig, PostprocessConfig

    if crf:
        base = post or PostprocessConfig()
        return dataclasses.replace(base, crf=base.crf or CRFConfig())
    return None if post is None else dataclasses.replace(post, crf=None)


def describe_postprocessing(post: Any) -> dict[str, Any]:
    """``post`` as JSON-ready data (its ``repr`` when it does not convert)."""
    from medseg.config import to_dict

    try:
        return dict(to_dict(post))
    except (TypeError, ValueError):
        return {"config": repr(post)}
