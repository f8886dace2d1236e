"""Read an offline W&B run back from its ``.wandb`` file, for the tests (wandb has no public
reader for offline runs)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any


def read_wandb_records(run_file: Path) -> list[Any]:
    """Decode a ``.wandb`` file: a 7-byte header, then 32 KiB blocks of records framed as in
    LevelDB's log (crc32: 4, length: 2, type: 1 = full, 2 = first, 3 = middle, 4 = last)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    if len(data) < 7:  # not written yet
        return []
    assert data[:4] == b":W&B"
    block, header = 32768, 7
    pos, pending, records = 7, b"", []
    while pos + header <= len(data):
        left_in_block = block - pos % block
        if left_in_block < header:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if kind == 0:  # zero padding up to the end of the block
            pos += left_in_block
            continue
        if pos + header + length > len(data):  # still being written
            break
        chunk = data[pos + header : pos + header + length]
        pos += header + length
        if kind == 1:
            payload = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        else:
            payload, pending = pending + chunk, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records
