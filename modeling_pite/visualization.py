"""Draw predicted point trajectories over the sampled frames; write an MP4/GIF or a PNG contact sheet.

Trajectories are `[P, N, 2]` arrays of (x, y) in [0, 1] of the frame's width/height, one row per tracked
point and one column per sampled frame; a negative coordinate means "not visible in that frame".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from processing.video_writer import write_video

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))


def _as_named_trajectories(trajectories: Any) -> list[tuple[str, np.ndarray]]:
    """Accept `{label: [P, N, 2]}` or the pipeline's list of `{"phrase", "trajectory"}` dicts."""
    if isinstance(trajectories, Mapping):
        items = list(trajectories.items())
    else:
        items = [(item["phrase"], item["trajectory"]) for item in trajectories]
    named = []
    for label, trajectory in items:
        trajectory = np.asarray(trajectory, dtype=np.float32)
        if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
            raise ValueError(f"trajectory of {label!r} must be [P, N, 2], got shape {trajectory.shape}")
        named.append((str(label), trajectory))
    return named


def draw_trajectories(
    frames: np.ndarray,
    trajectories: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    timestamps: Sequence[float] | None = None,
    tail: int = 8,
    radius: int | None = None,
) -> np.ndarray:
    """Return a copy of `frames` `[N, H, W, 3]` with every point drawn where it is in each frame.

    Each phrase gets a colour; a point is a filled dot plus a fading line over its last `tail` positions,
    so the motion reads on a still frame. `timestamps` (seconds of each frame) are written in a corner.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    num_frames, height, width = frames.shape[:3]
    named = _as_named_trajectories(trajectories)
    for label, trajectory in named:
        if trajectory.shape[1] != num_frames:
            raise ValueError(
                f"trajectory of {label!r} has {trajectory.shape[1]} frames but {num_frames} frames were given; "
                "draw over the frames the model saw (sample_video with the model's num_frames)"
            )
    radius = radius or max(2, round(min(height, width) / 60))
    scale = np.array([width - 1, height - 1], dtype=np.float32)
    drawn = []
    for index in range(num_frames):
        image = Image.fromarray(frames[index])
        draw = ImageDraw.Draw(image)
        for phrase_index, (label, trajectory) in enumerate(named):
            color = PALETTE[phrase_index % len(PALETTE)]
            for point in trajectory:
                _draw_point_track(draw, point[: index + 1] * scale, point[: index + 1] >= 0, tail, radius, color)
            draw.text((4, 4 + 12 * phrase_index), label, fill=color)
        if timestamps is not None:
            draw.text((4, height - 14), f"{timestamps[index]:.2f}s", fill=(255, 255, 255))
        drawn.append(np.asarray(image))
    return np.stack(drawn)


def _draw_point_track(
    draw: ImageDraw.ImageDraw, path: np.ndarray, valid: np.ndarray, tail: int, radius: int, color: tuple
) -> None:
    visible = valid.all(axis=-1)
    start = max(0, len(path) - 1 - tail)
    for step in range(start + 1, len(path)):
        if visible[step - 1] and visible[step]:
            fade = (step - start) / max(1, len(path) - 1 - start)
            width = max(1, round(radius * fade * 0.6))
            draw.line([tuple(path[step - 1]), tuple(path[step])], fill=color, width=width)
    if visible[-1]:
        x, y = path[-1]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255))


def contact_sheet(frames: np.ndarray, *, columns: int = 10, max_width: int = 2000) -> Image.Image:
    """Tile `[N, H, W, 3]` frames into one image, row by row, thumbnails shrunk to fit `max_width`."""
    num_frames, height, width = frames.shape[:3]
    columns = min(columns, num_frames)
    rows = math.ceil(num_frames / columns)
    scale = min(1.0, max_width / (columns * width))
    thumb = (max(1, round(width * scale)), max(1, round(height * scale)))
    sheet = Image.new("RGB", (thumb[0] * columns, thumb[1] * rows))
    for index, frame in enumerate(frames):
        tile = Image.fromarray(frame).resize(thumb, Image.BILINEAR)
        sheet.paste(tile, ((index % columns) * thumb[0], (index // columns) * thumb[1]))
    return sheet


def save_trajectory_visualization(
    path: str | Path,
    frames: np.ndarray,
    trajectories: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    timestamps: Sequence[float] | None = None,
    fps: float = 10.0,
    columns: int = 10,
) -> Path:
    """Draw the trajectories and write `path`: `.mp4` (PyAV), `.gif` (Pillow) or `.png` (contact sheet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".mp4", ".gif", ".png"}:
        raise ValueError(f"{path}: unsupported output {suffix!r}; use .mp4, .gif or .png")
    drawn = draw_trajectories(frames, trajectories, timestamps=timestamps)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        contact_sheet(drawn, columns=columns).save(path)
    elif suffix == ".gif":
        images = [Image.fromarray(frame) for frame in drawn]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        height, width = drawn.shape[1:3]
        write_video(path, (frame[: height - height % 2, : width - width % 2] for frame in drawn), fps=fps)
    return path
