"""The experiments' seed statistics: bootstrap intervals, the verdict rule, Spearman's rho,
checked on constructed inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recipes.experiments._common import (
    RULE,
    VERDICTS,
    bootstrap_interval,
    spearman,
    summarize,
    verdict,
)


def test_bootstrap_interval_basics() -> None:
    assert bootstrap_interval([0.3]) == (0.3, 0.3, 0.3)
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    # with 3 values every resample mean lies in [min, max]; the extreme resamples (all the same
    # value) have probability 1/27 > 2.5 %, so the 95 % interval is exactly [min, max]
    mean, low, high = bootstrap_interval([1.0, 2.0, 6.0])
    assert (mean, low, high) == (3.0, 1.0, 6.0)
    # reproducible (fixed RNG) and shrinking with more data
    values = list(np.random.default_rng(5).normal(0.0, 1.0, 40))
    assert bootstrap_interval(values) == bootstrap_interval(values)
    mean, low, high = bootstrap_interval(values)
    assert low < mean < high
    sem = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert high - low == pytest.approx(2 * 1.96 * sem, rel=0.25)  # the normal-theory width
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="no values"):
        bootstrap_interval([])


def test_verdict_rule_on_known_answers() -> None:
    assert set(VERDICTS) == {"holds", "reversed", "inconclusive"}
    assert "holds" in RULE and "reversed" in RULE and "inconclusive" in RULE
    # paper direction "lower" (-1)
    assert verdict(-0.3, -0.1) == "holds"
    assert verdict(0.1, 0.3) == "reversed"
    assert verdict(-0.1, 0.2) == "inconclusive"
    assert verdict(0.0, 0.0) == "inconclusive"  # identical conditions: no evidence either way
    assert verdict(-0.2, 0.0) == "inconclusive"  # touching 0 is not excluding it
    # paper direction "higher" (+1)
    assert verdict(0.1, 0.3, direction=1) == "holds"
    assert verdict(-0.3, -0.1, direction=1) == "reversed"
    with pytest.raises(ValueError):
        verdict(0.2, 0.1)
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, direction=0)


def test_summarize_on_constructed_seeds() -> None:
    key = {"layer": "conv"}
    # every seed lower: holds; every seed higher: reversed; mixed signs: inconclusive
    assert summarize(key, "d", [-0.2, -0.1, -0.3], direction=-1)["verdict"] == "holds"
    assert summarize(key, "d", [0.2, 0.1, 0.3], direction=-1)["verdict"] == "reversed"
    assert summarize(key, "d", [0.2, -0.1, -0.3], direction=-1)["verdict"] == "inconclusive"
    assert summarize(key, "d", [0.2, 0.1, 0.3], direction=1)["verdict"] == "holds"
    row = summarize(key, "srop", [0.3, 0.4])
    assert row["verdict"] == "n/a" and row["paper_direction"] == "none"
    assert row["layer"] == "conv" and row["seeds"] == 2
    assert row["low"] <= row["mean"] <= row["high"]
    # a flat (NaN) seed is left out and counted out
    row = summarize(key, "d", [-0.2, math.nan, -0.1], direction=-1)
    assert row["seeds"] == 2 and row["verdict"] == "holds"
    row = summarize(key, "d", [math.nan], direction=-1)
    assert row["seeds"] == 0 and row["verdict"] == "inconclusive" and math.isnan(row["mean"])


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30)
    b[3] = b[7]  # a tie: average ranks, as scipy.stats.spearmanr
    import scipy.stats as scipy_stats

    assert spearman(a, b) == pytest.approx(float(scipy_stats.spearmanr(a, b)[0]), abs=1e-12)
