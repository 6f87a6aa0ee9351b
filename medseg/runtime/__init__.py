"""Process-level helpers shared by training and prediction: device choice and the
``torchrun`` process group (one implementation each, imported by every stage that needs it)."""

from medseg.runtime.device import resolve_device

__all__ = ["resolve_device"]
