"""A picture of an annotation: the keypoint trajectories drawn over the N frames they belong to.

`render_preview` samples the record's video the way the trajectories were sampled (N frames over the
whole video) and hands frames and trajectories to `modeling_pite.visualization`, which draws them and
writes a PNG contact sheet, a GIF or an MP4, so a person can see at a glance whether the points stay on
their objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modeling_pite.video_io import sample_video
from modeling_pite.visualization import save_trajectory_visualization

__all__ = ["render_preview"]


def render_preview(record: dict[str, Any], path: str | Path, *, size: int | None = 180, columns: int = 10) -> Path:
    """Draw every phrase trajectory of a stage-2 `record` over its video; `path`'s suffix picks the format.

    Labels are `"{event}: {phrase}"`; `size` is the shortest edge the frames are drawn at (None: native).
    """
    trajectories = {
        f"{index}: {phrase['text']}": np.asarray(phrase["trajectory"], dtype=np.float32)
        for index, event in enumerate(record["events"])
        for phrase in event["phrases"]
    }
    if not trajectories:
        raise ValueError(f"record {record['id']!r} has no phrase trajectory to draw")
    num_frames = next(iter(trajectories.values())).shape[1]
    frames, metadata = sample_video(record["video"], num_frames, size=size)
    return save_trajectory_visualization(path, frames, trajectories, timestamps=metadata.timestamps, columns=columns)
