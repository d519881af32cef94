"""Random synthetic scenes: which objects, what size, when they appear and along which path they move.

Paths are piecewise linear with axis-aligned segments, so every segment has one plain-English
direction ("moves to the left", "enters from the top", "stays still"); an object never repeats a
direction, so every event caption of a video is distinct (grounding queries are unambiguous).
"""

from __future__ import annotations

import math

import numpy as np

from .world import COLORS, SHAPES, ObjectSpec, VideoSpec

__all__ = ["DIRECTIONS", "frame_count", "sample_image_spec", "sample_video_spec"]

# direction -> unit step (x, y) in image coordinates (y grows downwards)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def frame_count(duration: float, fps: float) -> int:
    """Number of frames of a video of `duration` seconds (at least 2)."""
    return max(2, math.floor(duration * fps + 0.5))


def _box(size: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest centre (x, y) that keep the whole sprite inside the frame."""
    half = size / 2
    return np.array([half, half]), np.array([width - half, height - half])


def _outside(side: str, along: float, size: int, width: int, height: int) -> np.ndarray:
    """A centre just beyond the frame edge `side` ("left", ...), `along` the other axis."""
    half = size / 2 + 1
    return {
        "left": np.array([-half, along]),
        "right": np.array([width + half, along]),
        "up": np.array([along, -half]),
        "down": np.array([along, height + half]),
    }[side]


def _segment_times(rng: np.random.Generator, appear: float, disappear: float, count: int, fps: float) -> list[float]:
    weights = np.cumsum(rng.uniform(0.6, 1.4, size=count))
    bounds = appear + (disappear - appear) * weights / weights[-1]
    times = [appear] + [round(t * fps) / fps for t in bounds[:-1]] + [disappear]
    return sorted(set(times))


def _sample_object(
    rng: np.random.Generator,
    color: str,
    shape: str,
    width: int,
    height: int,
    fps: float,
    duration: float,
    size_range: tuple[float, float],
    max_segments: int,
) -> ObjectSpec:
    size = max(6, round(rng.uniform(*size_range) * min(width, height)))
    low, high = _box(size, width, height)
    min_move = 0.25 * float(min(high - low))
    min_life = min(duration, max(1.5, 0.4 * duration))
    appear = 0.0 if rng.random() < 0.5 else round(rng.uniform(0, duration - min_life) * fps) / fps
    # `appear` is rounded to a frame, so appear + min_life can pass the end by up to half a frame
    latest = min(appear + min_life, duration)
    disappear = duration if rng.random() < 0.5 else round(rng.uniform(latest, duration) * fps) / fps
    count = max(1, min(int(rng.integers(1, max_segments + 1)), int((disappear - appear) // 1.0)))
    times = _segment_times(rng, appear, disappear, count, fps)
    count = len(times) - 1
    enters = rng.random() < 0.35
    exits = rng.random() < 0.35 and (count > 1 or not enters)

    used: set[str] = set()
    if enters:
        side = str(rng.choice(list(DIRECTIONS)))
        axis = 1 if side in ("left", "right") else 0
        start = _outside(side, rng.uniform(low[axis], high[axis]), size, width, height)
        position = start.copy()
        position[1 - axis] = rng.uniform(low[1 - axis], high[1 - axis])
        used.add(_OPPOSITE[side])
        points = [start, position]
    else:
        points = [rng.uniform(low, high)]
    while len(points) < count + (0 if exits else 1):
        position = points[-1]
        room = {
            "left": position[0] - low[0],
            "right": high[0] - position[0],
            "up": position[1] - low[1],
            "down": high[1] - position[1],
        }
        options = [d for d in DIRECTIONS if d not in used and room[d] >= min_move]
        if "still" not in used and (not options or rng.random() < 0.15):
            used.add("still")
            points.append(position.copy())
            continue
        options = options or [d for d in DIRECTIONS if room[d] >= min_move] or list(DIRECTIONS)
        direction = str(rng.choice(options))
        used.add(direction)
        distance = rng.uniform(min_move, max(min_move, room[direction]))
        points.append(np.clip(position + distance * np.array(DIRECTIONS[direction]), low, high))
    if exits:
        side = str(rng.choice(list(DIRECTIONS)))
        axis = 1 if side in ("left", "right") else 0
        points.append(_outside(side, points[-1][axis], size, width, height))
    keyframes = [(t, float(x), float(y)) for t, (x, y) in zip(times, points)]
    return ObjectSpec(color, shape, size, keyframes, texture_seed=int(rng.integers(2**31)))


def sample_video_spec(
    rng: np.random.Generator,
    video_id: str,
    width: int = 64,
    height: int = 64,
    fps: float = 10.0,
    duration_range: tuple[float, float] = (4.0, 8.0),
    num_objects: tuple[int, int] = (1, 3),
    size_range: tuple[float, float] = (0.22, 0.34),
    max_segments: int = 3,
) -> VideoSpec:
    """A random video: 1-3 objects of distinct names, each appearing, moving and disappearing."""
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even (libx264 yuv420p), got {width}x{height}")
    num_frames = frame_count(rng.uniform(*duration_range), fps)
    duration = num_frames / fps
    names = [(color, shape) for color in COLORS for shape in SHAPES]
    picks = rng.choice(len(names), size=int(rng.integers(num_objects[0], num_objects[1] + 1)), replace=False)
    objects = [_sample_object(rng, *names[i], width, height, fps, duration, size_range, max_segments) for i in picks]
    return VideoSpec(video_id, width, height, fps, num_frames, int(rng.integers(2**31)), objects)


def sample_image_spec(
    rng: np.random.Generator,
    image_id: str,
    width: int = 64,
    height: int = 64,
    num_objects: tuple[int, int] = (1, 3),
    size_range: tuple[float, float] = (0.22, 0.34),
    min_visible: float = 0.4,
) -> VideoSpec:
    """A still scene (a one-frame `VideoSpec`): objects placed at random, each at least `min_visible` seen."""
    names = [(color, shape) for color in COLORS for shape in SHAPES]
    picks = rng.choice(len(names), size=int(rng.integers(num_objects[0], num_objects[1] + 1)), replace=False)
    background_seed = int(rng.integers(2**31))
    for _ in range(50):
        objects = []
        for i in picks:
            size = max(6, round(rng.uniform(*size_range) * min(width, height)))
            x, y = rng.uniform(*_box(size, width, height))
            keyframes = [(0.0, float(x), float(y)), (1.0, float(x), float(y))]
            objects.append(ObjectSpec(*names[i], size, keyframes, texture_seed=int(rng.integers(2**31))))
        spec = VideoSpec(image_id, width, height, 1.0, 1, background_seed, objects)
        if all(spec.object_mask(i, 0.0).sum() >= min_visible * obj.mask.sum() for i, obj in enumerate(objects)):
            return spec
    return spec
