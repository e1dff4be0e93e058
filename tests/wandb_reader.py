"""Read a W&B offline run file (``run-<id>.wandb``) without a server: a 7-byte header, then 32 KiB blocks of
records ``<crc32 u32><len u16><type u8>`` (FULL 1, FIRST 2, MIDDLE 3, LAST 4), each payload a protobuf Record."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
RECORD_HEADER = 7


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()[HEADER:]
    out, pending, pos = [], b"", 0
    while pos + RECORD_HEADER <= len(data):
        left_in_block = BLOCK - ((pos + HEADER) % BLOCK)
        if left_in_block < RECORD_HEADER:  # block tail padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        payload = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def run_info(path: Path) -> dict:
    """group, job_type, tags, name, config keys and history metric names of one offline run."""
    info: dict = {"history": set(), "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(group=run.run_group, job_type=run.job_type, tags=list(run.tags), name=run.display_name,
                        config={item.key for item in run.config.update})
        elif kind == "history":
            info["history"].update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "summary":
            for item in record.summary.update:
                info["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return info
