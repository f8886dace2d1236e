"""Two real processes (gloo): merged statistics equal one process over the union of the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _ddp import free_port

from lightning_srop import STATISTICS, SROPStatistics
from lightning_srop.report import LayerReport


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    batches = [torch.randn(2 + i, 5, 12, 12, generator=gen).relu() for i in range(6)]
    batches[1][0, 0] = 0.0  # flat
    batches[4][1, 2, 0, 0] = math.inf  # invalid
    return batches


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        metric = SROPStatistics()
        local = _batches()[rank::world_size]
        for b in local:
            metric.update(b)
        local_count = int(metric.count)
        report = LayerReport.from_metric("layer", metric)
        synced = {k: float(v) for k, v in metric.compute().items()}
        torch.save(
            {
                "report_stats": report.stats,
                "report_counts": report.counts,
                "report_sample_counts": report.sample_counts,
                "compute": synced,
                "local_count_before": local_count,
                "local_count_after": int(metric.count),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_process_merge_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = SROPStatistics()
    for b in _batches():
        single.update(b)
    expected = {k: float(v) for k, v in single.compute().items()}
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank, res in enumerate(results):
        for key in STATISTICS:
            got, want = res["report_stats"][key], expected[key]
            assert got == want or (math.isnan(got) and math.isnan(want)), (rank, key, got, want)
            assert res["compute"][key] == res["report_stats"][key] or math.isnan(want)
        assert np.array_equal(res["report_counts"], single.hist.numpy())
        assert np.array_equal(res["report_sample_counts"], single.sample_hist.numpy())
        # Syncing for the report leaves each rank's own states as they were.
        assert res["local_count_before"] == res["local_count_after"] < expected["count"]
    assert expected["flat"] == 1 and expected["invalid"] == 1


def _pooled_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(8)
    ).eval()


def _inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(3, 1, 16, 16, generator=gen), torch.randn(3, 1, 64, 64, generator=gen)]


def _unit_input_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from lightning_srop import SROPEngine

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        net = _pooled_net()
        engine = SROPEngine(net, ["1"], unit="input")
        x = _inputs()[rank]  # downscaling 2 on rank 0, 8 on rank 1
        with torch.no_grad(), engine.capture(x):
            net(x)
        local_range = engine.metrics["1"].max_value
        (report,) = engine.reports()
        torch.save({"report": report, "local_range": local_range}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_unit_input_ranges_that_differ_between_processes_merge_exactly(tmp_path: Path) -> None:
    """Each process widens its histogram to the largest range (a power of two apart), so the
    merged statistics equal one process measuring both inputs."""
    from lightning_srop import SROPEngine

    mp.spawn(_unit_input_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    net = _pooled_net()
    single = SROPEngine(net, ["1"], unit="input", sync=False)
    for x in _inputs():
        with torch.no_grad(), single.capture(x):
            net(x)
    (expected,) = single.reports()
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert results[0]["local_range"] == 4 * results[1]["local_range"]  # they did differ
    for res in results:
        got = res["report"]
        assert np.array_equal(got.counts, expected.counts)
        assert np.array_equal(got.edges, expected.edges)
        for key in ("count", "mean", "median", "q95", "max"):
            assert got.stats[key] == pytest.approx(expected.stats[key], rel=1e-12), key
