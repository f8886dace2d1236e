"""lightning-srop: spectral roll-off points of feature maps as a Lightning training diagnostic."""

from lightning_srop.callback import SROPCallback
from lightning_srop.engine import SROPEngine
from lightning_srop.functional import FusedKernelWarning, spectral_rolloff
from lightning_srop.notices import SROPWarning
from lightning_srop.options import SROPOptions
from lightning_srop.plots import compare
from lightning_srop.profile import profile
from lightning_srop.report import LayerMeta, LayerReport, SROPReport
from lightning_srop.runs import read_run
from lightning_srop.statistics import STATISTICS, SROPStatistics

__version__ = "0.1.0"

__all__ = [
    "STATISTICS",
    "FusedKernelWarning",
    "LayerMeta",
    "LayerReport",
    "SROPCallback",
    "SROPEngine",
    "SROPOptions",
    "SROPReport",
    "SROPStatistics",
    "SROPWarning",
    "__version__",
    "compare",
    "profile",
    "read_run",
    "spectral_rolloff",
]
