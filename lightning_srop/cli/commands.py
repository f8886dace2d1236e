"""The three commands (``profile``, ``compare``, ``export``) and the entry point :func:`main`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_srop.cli.loading import (
    _class_model,
    _dataset,
    _input_channels,
    _torchvision_model,
)
from lightning_srop.cli.parser import (
    _COMMANDS,
    PROG,
    Compare,
    Export,
    Profile,
    _arguments,
    _Failure,
    _one_line,
    _spelled,
    _Usage,
    build_options,
    build_parser,
)
from lightning_srop.cli.trainer import (
    _profile_one_device,
    _profile_trainer,
)
from lightning_srop.options import SROPOptions
from lightning_srop.report import CHANGE, SROPReport, format_table, write_csv

if TYPE_CHECKING:
    pass

__all__ = ["main"]


def _profile_command(args: Profile, options: SROPOptions) -> int:
    start = time.perf_counter()
    for flag in ("batch_size", "devices", "num_nodes"):
        if getattr(args, flag) < 1:
            raise _Usage(f"`{flag}` must be >= 1; got {getattr(args, flag)}.")
    if args.workers < 0:
        raise _Usage(f"`workers` must be >= 0; got {args.workers}.")
    trainer_run = args.devices > 1 or args.num_nodes > 1 or args.strategy is not None
    if trainer_run and args.device != "auto":
        raise _Usage("`device` is for one-device runs; a Trainer run takes `accelerator`.")

    import torch

    from lightning_srop.layers import resolve_layers

    torch.manual_seed(args.seed)  # random weights: the same model for the same seed
    build = _class_model if "." in args.model else _torchvision_model
    model = build(args)
    try:
        resolve_layers(model, options.layers, owner=PROG)
    except (ValueError, TypeError) as err:
        raise _Usage(str(err).removeprefix(f"{PROG}: ")) from err
    channels = _input_channels(model) or 3
    dataset = _dataset(args, channels)
    label = args.label or args.model.rpartition(".")[2]

    measured = time.perf_counter()
    if trainer_run:
        report, images, where = _profile_trainer(model, dataset, options, args)
        if report is None:  # not rank zero: rank zero writes and prints
            return 0
    else:
        report, images, where = _profile_one_device(model, dataset, options, args)
    done = time.perf_counter()
    report = dataclasses.replace(report, model=type(model).__name__, label=label)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.csv", out / "report.png"]
    report.to_json(paths[0], indent=1)
    report.to_csv(paths[1])
    from lightning_srop.plots import plot_reports, save_figure

    title = f"SROP per layer: {label} ({images} images)"
    save_figure(plot_reports([report], unit=options.unit, title=title), paths[2])
    print(report.table())
    print(f"wrote {', '.join(map(str, paths))}")
    print(
        f"measured {len(report)} layers over {images} images ({report.num_batches} batches) "
        f"on {where} in {done - measured:.2f} s ({time.perf_counter() - start:.2f} s in all)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# compare and export; their CSV file and their table


def _number(value: float, digits: int) -> str:
    """A table cell: ``value`` with ``digits`` decimals, NaN as empty."""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _unique(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _run_reports(source: str, prefix: str) -> list[SROPReport]:
    """The reports per epoch of a run directory, or the usage error that says why none."""
    from lightning_srop.runs import read_run

    try:
        reports = read_run(Path(source), prefix=prefix)
    except (ValueError, OSError) as err:
        raise _Usage(str(err)) from err
    if not reports:
        raise _Usage(f"{source!r}: no SROP scalars with prefix {prefix!r}.")
    return reports


def _read_reports(args: Compare) -> tuple[list[SROPReport], list[str]]:
    """The reports to compare (files, or the last epoch of run directories), default labels."""
    reports: list[SROPReport] = []
    defaults: list[str] = []
    for source in args.reports:
        path = Path(source)
        if path.is_dir():
            report = _run_reports(source, args.prefix)[-1]
            epoch = "" if report.epoch is None else f" epoch {report.epoch}"
            defaults.append(report.label or f"{path.name}{epoch}")
        elif path.is_file():
            try:
                report = SROPReport.from_json(path)
            except (ValueError, KeyError, TypeError) as err:
                raise _Usage(f"{source!r} is not a report JSON file ({err}).") from err
            defaults.append(
                report.label or (path.parent.name if path.stem == "report" else path.stem)
            )
        else:
            raise _Usage(f"{source!r}: no such report file or run directory.")
        reports.append(report)
    return reports, defaults


def _compare_command(args: Compare) -> int:
    from lightning_srop.plots import compare, save_figure, unit_label
    from lightning_srop.report import aligned_names

    if args.labels is not None and len(args.labels) != len(args.reports):
        raise _Usage(
            f"`labels`: expected one label per report ({len(args.reports)}), got "
            f"{len(args.labels)}."
        )
    reports, defaults = _read_reports(args)
    labels = _unique(args.labels if args.labels is not None else defaults)
    try:
        figure = compare(reports, labels, log=args.log, unit=args.unit, title=args.title)
        columns = [r.values("mean", args.unit) for r in reports]
    except ValueError as err:
        raise _Usage(str(err)) from err
    names = aligned_names(reports)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = save_figure(figure, out / "compare.png")
    header = ["layer", *labels]
    rows = [[name, *(float(c.get(name, math.nan)) for c in columns)] for name in names]
    csv_path = out / "compare.csv"
    write_csv(csv_path, rows, header)
    print(f"mean SROP ({unit_label(args.unit)})")
    shown = [[name, *(_number(c.get(name, math.nan), 4) for c in columns)] for name in names]
    print(format_table(shown, header))
    print(f"wrote {png}, {csv_path}")
    return 0


def _export_command(args: Export) -> int:

    from lightning_srop.plots import plot_change_heatmap, plot_over_epochs, save_figure
    from lightning_srop.runs import to_csv

    run = Path(args.run)
    if not run.exists():
        raise _Usage(f"{args.run!r}: no such run directory.")
    reports = _run_reports(args.run, args.prefix)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "srop.csv"
    to_csv(reports, csv_path)
    json_path = out / "srop.json"
    json_path.write_text(
        json.dumps({"run": str(run), "reports": [r.to_dict() for r in reports]}) + "\n"
    )
    try:
        figure = plot_over_epochs(reports, statistic=args.statistic)
    except ValueError as err:
        raise _Usage(str(err)) from err
    pngs = [save_figure(figure, out / "srop.png")]
    if any(CHANGE in layer.extra for r in reports for layer in r.layers):
        # one picture of the whole run: each layer's change since initialization per epoch
        pngs.append(save_figure(plot_change_heatmap(reports), out / "srop_change.png"))

    shown = reports[-6:]
    header = [
        "layer",
        *(f"epoch {r.epoch if r.epoch is not None else i}" for i, r in enumerate(shown)),
    ]
    names = list(dict.fromkeys(name for r in shown for name in r.names))
    table = [
        [
            name,
            *(
                _number(r[name].stats.get(args.statistic, math.nan), 4) if name in r else ""
                for r in shown
            ),
        ]
        for name in names
    ]
    print(f"{args.statistic} SROP, last {len(shown)} of {len(reports)} measured epochs")
    print(format_table(table, header))
    print(f"wrote {csv_path}, {json_path}, {', '.join(map(str, pngs))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``lightning-srop`` console script).

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a run fails for a reason outside the arguments
        (one line on stderr). Bad arguments exit with code 2 through ``SystemExit``, after one
        line on stderr that names the flag.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    name = next((a for a in argv if not a.startswith("-")), "")
    prog = f"{PROG} {name}" if name in _COMMANDS else PROG
    try:
        parser = build_parser()
    except ModuleNotFoundError as err:  # jsonargparse comes with the cli extra
        print(f"{PROG}: error: {err}; pip install 'lightning-srop[cli]'", file=sys.stderr)
        return 1
    try:
        cfg = parser.parse_args(argv)
        args = cfg[cfg.command]
        if cfg.command == "profile":
            try:
                options = build_options(args)
            except (ValueError, TypeError) as err:
                raise _Usage(str(err).removeprefix(f"{prog}: ")) from err
            return _profile_command(_arguments(Profile, args), options)
        if cfg.command == "compare":
            return _compare_command(_arguments(Compare, args))
        return _export_command(_arguments(Export, args))
    except (_Usage, argparse.ArgumentError) as err:
        print(f"{prog}: error: {_spelled(str(err), name)}", file=sys.stderr)
        raise SystemExit(2) from None
    except _Failure as err:
        print(f"{prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return 1
