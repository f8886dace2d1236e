"""The tag scheme: every name the callback logs, encoded and decoded side by side.

Flat keys (``self.log``, CSV, W&B, MLflow): ``{prefix}/{label}/{statistic}``, the SROP
histogram ``{prefix}/{label}`` and the per-sample one ``{prefix}/{label}/per_sample_mean``;
``label`` is the layer's name, or ``{NN}-{layer}`` (:func:`depth_labels`) with
``ordered_tags=True``. TensorBoard: every layer a run of its own,
``{log_dir}/{prefix}/{NN}-{layer}`` (:func:`layer_run_dir`), holding the scalars
``{prefix}/{statistic}`` and the histograms ``{prefix}_histograms/per_map`` (one SROP per
channel map) and ``{prefix}_histograms/per_sample_mean``. A logger's own ``prefix`` argument
goes in front of every tag, ``{logger_prefix}-{tag}`` (:func:`with_logger_prefix`); ``/`` is
the logger's ``group_separator``.

The writers (:mod:`lightning_srop.loggers`, the callback) and the reader
(:mod:`lightning_srop.runs`) use only the names and functions here: a change to the scheme is
made once, on both sides. Pure string and path work: no torch, no logger class (a logger's
``group_separator`` and ``prefix`` are read off the object by :func:`layer_tag` and
:func:`logger_tag`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from lightning_srop.statistics import STATISTICS

__all__ = [
    "CHANGE",
    "CHARTS_GROUP",
    "DEFAULT_PREFIX",
    "HISTOGRAMS_GROUP",
    "LOGGER_JOIN",
    "PER_MAP_TAG",
    "PER_SAMPLE_SUFFIX",
    "REPORTS_GROUP",
    "SEPARATOR",
    "depth_labels",
    "group_separator",
    "histogram_key",
    "join_tag",
    "layer_run_dir",
    "layer_run_histogram_tag",
    "layer_run_key",
    "layer_tag",
    "logger_prefix_splits",
    "logger_tag",
    "scalar_key",
    "split_depth_label",
    "tag_rest",
    "with_logger_prefix",
]

#: The default first component of every logged name (the callback's and the readers' ``prefix``).
DEFAULT_PREFIX: Final[str] = "srop"

#: What joins tag components: the ``group_separator`` of Lightning's loggers.
SEPARATOR: Final[str] = "/"

#: What Lightning's loggers put between their own ``prefix`` argument and a tag
#: (``LOGGER_JOIN_CHAR``).
LOGGER_JOIN: Final[str] = "-"

#: The change since the baseline, log(mean SROP / baseline mean SROP): a key of
#: ``LayerReport.extra`` and the logged statistic ``{prefix}/{layer}/change``.
CHANGE: Final[str] = "change"

#: Tag suffix of the per-sample mean SROP histogram, ``{prefix}/{layer}/per_sample_mean`` (not
#: ``.../sample_mean``, the key of the scalar statistic: in W&B one key cannot hold both).
PER_SAMPLE_SUFFIX: Final[str] = "per_sample_mean"

#: The histograms of a TensorBoard layer run: ``{prefix}{HISTOGRAMS_GROUP}/{PER_MAP_TAG}`` (one
#: SROP per channel map) and ``{prefix}{HISTOGRAMS_GROUP}/{PER_SAMPLE_SUFFIX}``.
HISTOGRAMS_GROUP: Final[str] = "_histograms"
PER_MAP_TAG: Final[str] = "per_map"

#: W&B's line charts: ``{prefix}{CHARTS_GROUP}/{statistic}``.
CHARTS_GROUP: Final[str] = "_charts"

#: The folder of ``save_reports=True``: ``{log_dir}/{prefix}{REPORTS_GROUP}/``.
REPORTS_GROUP: Final[str] = "_reports"

_DEPTH_LABEL: Final[re.Pattern[str]] = re.compile(r"^(\d+)-(.+)$")


def join_tag(*parts: str, separator: str = SEPARATOR) -> str:
    """A tag from its components, e.g. ``join_tag("srop", "conv", "mean") == "srop/conv/mean"``."""
    return separator.join(parts)


def tag_rest(tag: str, head: str, separator: str = SEPARATOR) -> str | None:
    """``rest`` of ``{head}{separator}{rest}`` (non-empty), None for other tags.

    Examples:
        >>> tag_rest("srop/conv/mean", "srop"), tag_rest("loss", "srop")
        ('conv/mean', None)
    """
    start = head + separator
    return tag[len(start) :] if tag.startswith(start) and len(tag) > len(start) else None


def depth_labels(index: Mapping[str, int], names: Iterable[str]) -> dict[str, str]:
    """Layer -> ``{NN}-{layer}``: its depth index, zero-padded to one width for the run (at
    least two digits), so that the labels sort in forward order.

    Examples:
        >>> depth_labels({"conv": 0, "pool": 1}, ["pool"])
        {'pool': '01-pool'}
    """
    width = max(2, len(str(max(index.values(), default=0))))
    return {name: f"{index[name]:0{width}d}-{name}" for name in names}


def split_depth_label(label: str) -> tuple[int, str] | None:
    """``(index, layer)`` of a ``{NN}-{layer}`` label, None for a label without an index."""
    match = _DEPTH_LABEL.match(label)
    return None if match is None else (int(match.group(1)), match.group(2))


def layer_run_dir(log_dir: str | os.PathLike[str], prefix: str, label: str) -> Path:
    """The folder of a layer's own TensorBoard run: ``{log_dir}/{prefix}/{label}``."""
    return Path(log_dir) / prefix / label


def layer_run_histogram_tag(prefix: str, kind: str, separator: str = SEPARATOR) -> str:
    """``{prefix}_histograms/{kind}``, ``kind`` :data:`PER_MAP_TAG` or :data:`PER_SAMPLE_SUFFIX`."""
    return join_tag(prefix + HISTOGRAMS_GROUP, kind, separator=separator)


def with_logger_prefix(tag: str, logger_prefix: str, join: str = LOGGER_JOIN) -> str:
    """``tag`` as a logger with its own ``prefix`` argument names it: ``{logger_prefix}-{tag}``."""
    return f"{logger_prefix}{join}{tag}" if logger_prefix else tag


def group_separator(logger: object) -> str:
    """The logger's ``group_separator`` (Lightning's loggers: ``"/"``), ``"/"`` if it has none."""
    separator = getattr(logger, "group_separator", SEPARATOR)
    return separator if isinstance(separator, str) and separator else SEPARATOR


def layer_tag(logger: object, prefix: str, label: str, *rest: str) -> str:
    """``{prefix}{sep}{label}[{sep}{rest}...]`` joined with the logger's ``group_separator``.

    Examples:
        >>> layer_tag(None, "srop", "00-features.0", "mean")
        'srop/00-features.0/mean'
    """
    return join_tag(prefix, label, *rest, separator=group_separator(logger))


def logger_tag(logger: object, tag: str) -> str:
    """``tag`` as the logger's own ``log_metrics`` names it: its ``prefix`` argument (Lightning
    keeps it in ``_prefix``) joined by its ``LOGGER_JOIN_CHAR`` in front
    (:func:`with_logger_prefix`).

    Examples:
        >>> class Prefixed:
        ...     _prefix, LOGGER_JOIN_CHAR = "run1", "-"
        >>> logger_tag(Prefixed(), "srop/layer_profile"), logger_tag(None, "srop/a")
        ('run1-srop/layer_profile', 'srop/a')
    """
    logger_prefix = getattr(logger, "_prefix", "")
    join = getattr(logger, "LOGGER_JOIN_CHAR", LOGGER_JOIN)
    if isinstance(logger_prefix, str) and isinstance(join, str):
        return with_logger_prefix(tag, logger_prefix, join)
    return tag


def logger_prefix_splits(prefix: str) -> list[tuple[str, str]]:
    """The ways a reader's ``prefix`` splits into ``(logger_prefix, callback prefix)``.

    A reader is given the tags' whole prefix (``"{logger_prefix}-srop"`` for a logger with a
    ``prefix`` argument); the layer runs' folder is named by the callback's prefix alone. The
    whole ``prefix`` (no logger prefix) comes first.

    Examples:
        >>> logger_prefix_splits("exp-srop")
        [('', 'exp-srop'), ('exp', 'srop')]
    """
    splits = [("", prefix)]
    for i, char in enumerate(prefix):
        if char == LOGGER_JOIN and 0 < i < len(prefix) - 1:
            splits.append((prefix[:i], prefix[i + 1 :]))
    return splits


def scalar_key(tag: str, prefix: str, separator: str = SEPARATOR) -> tuple[str, str] | None:
    """``(label, statistic)`` of a flat scalar ``{prefix}/{label}/{statistic}`` (a statistic of
    :data:`~lightning_srop.statistics.STATISTICS` or ``change``), None for other tags."""
    rest = tag_rest(tag, prefix, separator)
    if rest is None:
        return None
    label, _, stat = rest.rpartition(separator)
    return (label, stat) if label and (stat in STATISTICS or stat == CHANGE) else None


def histogram_key(tag: str, prefix: str, separator: str = SEPARATOR) -> tuple[str, str] | None:
    """``(label, PER_MAP_TAG | PER_SAMPLE_SUFFIX)`` of a flat histogram
    ``{prefix}/{label}[/per_sample_mean]``, None for other tags."""
    rest = tag_rest(tag, prefix, separator)
    if rest is None:
        return None
    suffix = separator + PER_SAMPLE_SUFFIX
    if rest.endswith(suffix) and len(rest) > len(suffix):
        return rest[: -len(suffix)], PER_SAMPLE_SUFFIX
    return rest, PER_MAP_TAG


def layer_run_key(tag: str, prefix: str, separator: str = SEPARATOR) -> tuple[str, str] | None:
    """What a tag of a layer's own run holds: ``("scalar", statistic)`` for
    ``{prefix}/{statistic}``, ``("histogram", kind)`` for ``{prefix}_histograms/{kind}``, None
    for other tags."""
    stat = tag_rest(tag, prefix, separator)
    if stat is not None and (stat in STATISTICS or stat == CHANGE):
        return "scalar", stat
    kind = tag_rest(tag, prefix + HISTOGRAMS_GROUP, separator)
    if kind in (PER_MAP_TAG, PER_SAMPLE_SUFFIX):
        return "histogram", str(kind)
    return None
