"""Pure tensor functions: no Lightning, no hooks, no logging."""

from lightning_srop.functional.spectral_rolloff import (
    MAX_RADIUS_1D,
    MAX_RADIUS_2D,
    RolloffResult,
    spectral_rolloff,
)

__all__ = ["MAX_RADIUS_1D", "MAX_RADIUS_2D", "RolloffResult", "spectral_rolloff"]
