"""Which loader reads which stage's data, so scripts can say `--stage 2 --data_files a.jsonl b.parquet`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from .instruction_data import load_instruction_data
from .localized_narratives import load_localized_narratives
from .trajectory_data import load_trajectory_data

__all__ = ["STAGE_LOADERS", "load_stage_dataset"]

STAGE_LOADERS = {1: load_localized_narratives, 2: load_trajectory_data, 3: load_instruction_data}
# the loader argument that names the folder media paths are relative to
_MEDIA_FOLDER_ARGUMENT = {1: "image_folder", 2: "video_folder", 3: "video_folder"}


def load_stage_dataset(
    stage: int, data_files: Sequence[str | Path], media_folder: str | Path | None = None, **kwargs: Any
) -> Dataset:
    """Load and concatenate one stage's files; `kwargs` go to that stage's loader."""
    if stage not in STAGE_LOADERS:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    if not data_files:
        raise ValueError(f"stage {stage}: no data files given")
    loader = STAGE_LOADERS[stage]
    parts = [loader(path, **{_MEDIA_FOLDER_ARGUMENT[stage]: media_folder}, **kwargs) for path in data_files]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
