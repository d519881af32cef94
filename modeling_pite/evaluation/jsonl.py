"""Append-only JSON Lines, the crash-safe log behind resumable evaluation runs.

Each record is written as one line and flushed at once, so a crash loses at most the line being
written; `read_jsonl` drops such a torn last line (and `append_jsonl` starts a fresh line after it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["append_jsonl", "read_jsonl"]

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """The records of `path` (nothing when it does not exist); undecodable lines are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a torn or invalid line", path, line_no)
                continue
            if isinstance(record, dict):
                yield record


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record as a line and flush it to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")  # the previous writer died mid-line: keep its torn line separate
        f.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
