"""lightning-srop: spectral roll-off points of feature maps as a Lightning training diagnostic."""

from typing import Any

from lightning_srop.functional import spectral_rolloff
from lightning_srop.statistics import STATISTICS, SROPStatistics

__version__ = "0.1.0"

__all__ = [
    "STATISTICS",
    "SROPCallback",
    "SROPStatistics",
    "__version__",
    "profile",
    "spectral_rolloff",
]


def __getattr__(name: str) -> Any:
    # Filled in eagerly once the callback and profile modules land.
    if name == "SROPCallback":
        from lightning_srop.callback import SROPCallback

        return SROPCallback
    if name == "profile":
        from lightning_srop.profile import profile

        return profile
    raise AttributeError(f"module 'lightning_srop' has no attribute {name!r}")
