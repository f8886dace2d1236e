"""lightning-srop: spectral roll-off points of feature maps as a Lightning training diagnostic."""

from lightning_srop.callback import SROPCallback
from lightning_srop.functional import spectral_rolloff
from lightning_srop.profile import profile, profile_reports
from lightning_srop.report import LayerReport
from lightning_srop.statistics import STATISTICS, SROPStatistics

__version__ = "0.1.0"

__all__ = [
    "STATISTICS",
    "LayerReport",
    "SROPCallback",
    "SROPStatistics",
    "__version__",
    "profile",
    "profile_reports",
    "spectral_rolloff",
]
