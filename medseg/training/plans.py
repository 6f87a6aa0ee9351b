"""Compatibility alias: bundles exported before planning became its own package import
``medseg.training.plans`` in their ``configs/inference.json``. Plans live in
:mod:`medseg.planning.plans`; new code imports them from there."""

from medseg.planning.plans import NetworkSpec, Plans, load_plans, plans_from_dict, save_plans

__all__ = ["NetworkSpec", "Plans", "load_plans", "plans_from_dict", "save_plans"]
