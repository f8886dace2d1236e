"""Pure tensor functions: no Lightning, no hooks, no logging."""

from lightning_srop.functional.spectral_rolloff import (
    DEFAULT_PLAN_CACHE_BYTES,
    MAX_RADIUS_1D,
    MAX_RADIUS_2D,
    FusedKernelWarning,
    plan_cache_bytes,
    set_plan_cache_bytes,
    spectral_rolloff,
)

__all__ = [
    "DEFAULT_PLAN_CACHE_BYTES",
    "MAX_RADIUS_1D",
    "MAX_RADIUS_2D",
    "FusedKernelWarning",
    "plan_cache_bytes",
    "set_plan_cache_bytes",
    "spectral_rolloff",
]
