"""Network registry: one explicit mapping from a name to a MONAI network builder."""

from medseg.networks.registry import NETWORKS, build_network

__all__ = ["NETWORKS", "build_network"]
