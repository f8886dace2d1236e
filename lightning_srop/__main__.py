"""``python -m lightning_srop``: the ``lightning-srop`` command line."""

from lightning_srop.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
