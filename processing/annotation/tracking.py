"""Point trackers: follow query points from the first frame of a clip through the following frames.

A tracker maps `frames [T, H, W, 3] uint8` and query points `[M, 2]` (pixel (x, y) on frame 0, pixel
centres at integer coordinates as OpenCV counts them) to positions `[T, M, 2]` and visibility `[T, M]`.

- `LucasKanadeTracker` (default, "lk"): OpenCV pyramidal Lucas-Kanade frame to frame, with a
  forward-backward check: a point whose backward track misses its start by more than `fb_threshold`
  pixels, or that leaves the frame, is lost (occluded, out of view, or drifting) and stays lost.
- `FarnebackTracker` ("farneback"): dense Farneback flow both ways, sampled at the points; the same
  forward-backward rule. Slower, useful where corners are scarce.

Learned trackers (CoTracker, DOT, ...) are not on the package index; `register_tracker` plugs one in
by name so the pipeline config can select it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

__all__ = [
    "TRACKERS",
    "FarnebackTracker",
    "LucasKanadeTracker",
    "PointTracker",
    "TrackResult",
    "build_tracker",
    "register_tracker",
]


@dataclass
class TrackResult:
    positions: np.ndarray  # [T, M, 2] float32 pixel (x, y); last known position where lost
    visible: np.ndarray  # [T, M] bool


class PointTracker(Protocol):
    def __call__(self, frames: np.ndarray, points: np.ndarray) -> TrackResult: ...


def _gray(frames: np.ndarray) -> list[np.ndarray]:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]


def _inside(points: np.ndarray, width: int, height: int, margin: float = 0.0) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    return (x >= -margin) & (y >= -margin) & (x <= width - 1 + margin) & (y <= height - 1 + margin)


class _FrameToFrameTracker:
    """Chains a two-frame step over the clip and keeps the lost-stays-lost bookkeeping in one place."""

    def step(
        self, previous: np.ndarray, current: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, frames: np.ndarray, points: np.ndarray) -> TrackResult:
        gray = _gray(frames)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        num_frames, (height, width) = len(gray), gray[0].shape
        positions = np.zeros((num_frames, len(points), 2), dtype=np.float32)
        visible = np.zeros((num_frames, len(points)), dtype=bool)
        positions[0] = points
        visible[0] = _inside(points, width, height)
        for t in range(1, num_frames):
            positions[t] = positions[t - 1]
            alive = np.flatnonzero(visible[t - 1])
            if not len(alive):
                continue
            moved, ok = self.step(gray[t - 1], gray[t], positions[t - 1, alive])
            ok &= _inside(moved, width, height)
            positions[t, alive] = moved
            visible[t, alive] = ok
        return TrackResult(positions=positions, visible=visible)


class LucasKanadeTracker(_FrameToFrameTracker):
    """Pyramidal Lucas-Kanade (`cv2.calcOpticalFlowPyrLK`) with a forward-backward consistency check."""

    def __init__(self, win_size: int = 15, max_level: int = 3, fb_threshold: float = 1.0, max_iterations: int = 20):
        self.fb_threshold = fb_threshold
        self.params = {
            "winSize": (win_size, win_size),
            "maxLevel": max_level,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, max_iterations, 0.01),
        }

    def step(self, previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 1, 2)
        forward, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **self.params)
        backward, status_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, **self.params)
        error = np.linalg.norm(backward - start, axis=-1).reshape(-1)
        ok = (status.reshape(-1) == 1) & (status_back.reshape(-1) == 1) & (error <= self.fb_threshold)
        return forward.reshape(-1, 2), ok


class FarnebackTracker(_FrameToFrameTracker):
    """Dense Farneback optical flow in both directions, read at the points (bilinear)."""

    def __init__(self, fb_threshold: float = 1.0, levels: int = 3, win_size: int = 15, iterations: int = 3):
        self.fb_threshold = fb_threshold
        self.params = {
            "pyr_scale": 0.5,
            "levels": levels,
            "winsize": win_size,
            "iterations": iterations,
            "poly_n": 5,
            "poly_sigma": 1.1,
            "flags": 0,
        }

    @staticmethod
    def _sample(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
        map_x = np.ascontiguousarray(points[:, 0], dtype=np.float32).reshape(1, -1)
        map_y = np.ascontiguousarray(points[:, 1], dtype=np.float32).reshape(1, -1)
        return cv2.remap(flow, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)

    def step(self, previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        forward_flow = cv2.calcOpticalFlowFarneback(previous, current, None, **self.params)
        backward_flow = cv2.calcOpticalFlowFarneback(current, previous, None, **self.params)
        moved = points + self._sample(forward_flow, points)
        back = moved + self._sample(backward_flow, moved)
        return moved.astype(np.float32), np.linalg.norm(back - points, axis=-1) <= self.fb_threshold


TRACKERS: dict[str, Callable[..., PointTracker]] = {"lk": LucasKanadeTracker, "farneback": FarnebackTracker}


def register_tracker(name: str, factory: Callable[..., PointTracker]) -> None:
    """Make a tracker selectable by name (e.g. a CoTracker/DOT wrapper when the user has one installed)."""
    TRACKERS[name] = factory


def build_tracker(name: str, **kwargs: Any) -> PointTracker:
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; available: {sorted(TRACKERS)} (add one with register_tracker)")
    return TRACKERS[name](**kwargs)
