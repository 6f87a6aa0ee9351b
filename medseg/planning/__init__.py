"""Planning: the dataset fingerprint, the plans derived from it, and the planner.

Every later stage (preprocessing, transforms, networks, training, inference, bundle) reads
:class:`Plans`; none of them owns it.
"""

from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint, compute_fingerprint
from medseg.planning.planner import plan
from medseg.planning.plans import NetworkSpec, Plans, load_plans, save_plans

__all__ = [
    "Fingerprint",
    "NetworkSpec",
    "Plans",
    "PlansConfig",
    "compute_fingerprint",
    "load_plans",
    "plan",
    "save_plans",
]
