"""Seq-id maps: ``{sequence: [frame ids]}`` fixing which frames every run evaluates (recons_eval's seq-id maps).

Built once, stored as JSON, and read back by every run and every quantizer, so all of them score identical frames.
Two constructions, as in the reference evaluation code:

- **pose** (Co3Dv2, RealEstate10K): ``np.random.seed(seed)`` once, then ``np.random.choice(n, k, replace=False)``
  per sequence in the given order; the drawn order is kept (frame 0 of the list is the reference frame).
- **stride** (7-Scenes, NRGBD, DTU, ETH3D): ``arange(0, n, kf_every)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from fgq.data.files import DataError, read_json
from fgq.io import atomic_write

log = logging.getLogger(__name__)
SeqIdMap = dict[str, list[int]]


def pose_map(lengths: Mapping[str, int], num_frames: int = 10, seed: int = 42) -> SeqIdMap:
    """``lengths``: frames per sequence, **in iteration order** (the draws are sequential, so order matters).
    Sequences shorter than ``num_frames`` are left out (the caller counts and logs them)."""
    state = np.random.RandomState(seed)  # the legacy global-seed stream, without touching the global state
    out = {}
    for name, n in lengths.items():
        if n >= num_frames:
            out[name] = [int(i) for i in state.choice(n, num_frames, replace=False)]
    return out


def stride_map(lengths: Mapping[str, int], kf_every: int) -> SeqIdMap:
    if kf_every < 1:
        raise ValueError(f"kf_every={kf_every}: must be ≥ 1")
    return {name: list(range(0, n, kf_every)) for name, n in lengths.items()}


def save(path: Path, mapping: SeqIdMap) -> Path:
    return atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(mapping, indent=1)))


def load(path: Path) -> SeqIdMap:
    """Read and check a map: an object of sequence name → non-empty list of non-negative integers."""
    data = read_json(Path(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: a seq-id map must be a JSON object {{sequence: [frame ids]}}")
    for name, ids in data.items():
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) and i >= 0 for i in ids)):
            raise DataError(f"{path}: entry {name!r} must be a non-empty list of frame ids ≥ 0")
    return data


def load_or_build(path: str | Path | None, build, what: str) -> SeqIdMap:
    """The map at ``path`` if it exists; otherwise ``build()`` — saved to ``path`` when one is given, so the next
    run reads the same frames. ``what`` names the dataset in the log."""
    if path and Path(path).is_file():
        return load(Path(path))
    mapping = build()
    if path:
        save(Path(path), mapping)
        log.info("%s: wrote seq-id map %s (%d sequences)", what, path, len(mapping))
    return mapping


def restrict(mapping: SeqIdMap, available: Mapping[str, int], path: object, what: str) -> SeqIdMap:
    """Keep the map's sequences that exist on disk (logging the count of the missing ones, never silently);
    a frame id beyond a sequence's length is an error naming the map."""
    missing = [name for name in mapping if name not in available]
    if missing:
        log.warning("%s: %d of %d sequences in the seq-id map %s are not on disk and are skipped (e.g. %s)",
                    what, len(missing), len(mapping), path, missing[0])
    out = {}
    for name, ids in mapping.items():
        if name in available:
            if max(ids) >= available[name]:
                raise DataError(f"{path}: sequence {name!r} asks for frame {max(ids)} but has "
                                f"{available[name]} frames; regenerate the map (delete it)")
            out[name] = ids
    return out


def check_pose_frames(mapping: SeqIdMap, num_frames: int, path: object) -> None:
    """Every entry of a pose map must hold ``num_frames`` ids (a map drawn for another setting is an error)."""
    wrong = next((name for name, ids in mapping.items() if len(ids) != num_frames), None)
    if wrong is not None:
        raise DataError(f"{path}: sequence {wrong!r} has {len(mapping[wrong])} frame ids, not "
                        f"num_frames={num_frames}; delete the map to rebuild it, or set num_frames")


def warn_unmapped(names: Iterable[str], mapping: SeqIdMap, path: object, what: str) -> None:
    """Log (never silently drop) the sequences on disk that the seq-id map does not list."""
    unmapped = [name for name in names if name not in mapping]
    if unmapped:
        log.warning("%s: %d sequences are not in the seq-id map %s and are skipped (e.g. %s)",
                    what, len(unmapped), path, unmapped[0])
