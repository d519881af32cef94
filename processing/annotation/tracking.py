"""Point trackers: follow query points from the first frame of a clip through the following frames.

A tracker maps `frames [T, H, W, 3] uint8` and query points `[M, 2]` (pixel (x, y) on frame 0, pixel
centres at integer coordinates as OpenCV counts them) to positions `[T, M, 2]` and visibility `[T, M]`;
`groups` `[M]` optionally says which points belong to one object.

- `LucasKanadeTracker` (default, "lk"): OpenCV pyramidal Lucas-Kanade frame to frame, with a
  forward-backward check: a point whose backward track misses its start by more than `fb_threshold`
  pixels, or that leaves the frame, is lost (occluded, out of view, or drifting). Lost points move
  on with their object and are re-acquired by matching their first-frame patch (see
  `_FrameToFrameTracker`), so an object that comes back from behind an occluder is visible again.
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
    def __call__(self, frames: np.ndarray, points: np.ndarray, groups: np.ndarray | None = None) -> TrackResult: ...


def _gray(frames: np.ndarray) -> list[np.ndarray]:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]


def _inside(points: np.ndarray, width: int, height: int, margin: float = 0.0) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    return (x >= -margin) & (y >= -margin) & (x <= width - 1 + margin) & (y <= height - 1 + margin)


class _FrameToFrameTracker:
    """Chains a two-frame step over the clip, checks appearance, re-acquires lost points.

    - Appearance: a tracked point whose `patch_size` patch no longer correlates with its first-frame
      patch (normalised cross-correlation below `min_correlation`) is lost: the step followed an
      occluder that slid over it, which the forward-backward check cannot see.
    - Re-acquisition: a lost point is carried along with its group (the points of one object,
      `groups`) by the median displacement of the group's points tracked in that step, or the group's
      last displacement when fewer than `min_group_fraction` of them are (a few points stuck on an
      occluder must not stop the object). With `reacquire`, each frame Lucas-Kanade matches the lost
      points' first-frame patches from those predictions; a point comes back when the match passes the
      forward-backward and appearance checks (the object reappearing from behind an occluder).
      Limitation: an object hidden entirely while it changes direction is predicted on its old course
      and not found again.
    """

    fb_threshold: float
    reacquire: bool
    min_correlation: float
    patch_size: int
    min_group_fraction: float = 0.3
    lk_params: dict[str, Any]

    def step(
        self, previous: np.ndarray, current: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, frames: np.ndarray, points: np.ndarray, groups: np.ndarray | None = None) -> TrackResult:
        gray = _gray(frames)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        groups = np.zeros(len(points), dtype=np.int64) if groups is None else np.asarray(groups)
        group_ids = np.unique(groups)
        velocity = np.zeros((len(group_ids), 2), dtype=np.float32)
        num_frames, (height, width) = len(gray), gray[0].shape
        positions = np.zeros((num_frames, len(points), 2), dtype=np.float32)
        visible = np.zeros((num_frames, len(points)), dtype=bool)
        positions[0] = points
        visible[0] = _inside(points, width, height)
        group_index = np.searchsorted(group_ids, groups)
        group_sizes = np.bincount(group_index, minlength=len(group_ids))
        reference = _patches(gray[0], points, self.patch_size)
        for t in range(1, num_frames):
            tracked, moved = np.flatnonzero(visible[t - 1]), np.zeros((0, 2), dtype=np.float32)
            if len(tracked):
                moved, ok = self.step(gray[t - 1], gray[t], positions[t - 1, tracked])
                ok &= _inside(moved, width, height)
                ok[ok] = self._looks_like_reference(reference, gray[t], tracked[ok], moved[ok])
                tracked, moved = tracked[ok], moved[ok]
            counts = np.bincount(group_index[tracked], minlength=len(group_ids))
            for g in np.flatnonzero(counts >= self.min_group_fraction * group_sizes):
                members = group_index[tracked] == g  # the object's displacement in this step
                velocity[g] = np.median(moved[members] - positions[t - 1, tracked[members]], axis=0)
            positions[t] = positions[t - 1] + velocity[group_index]
            positions[t, tracked] = moved
            visible[t, tracked] = True
            lost = np.flatnonzero(~visible[t] & _inside(positions[t], width, height))
            if self.reacquire and len(lost):
                found, ok = self._match_reference(gray[0], gray[t], points[lost], positions[t, lost])
                ok &= _inside(found, width, height)
                ok[ok] = self._looks_like_reference(reference, gray[t], lost[ok], found[ok])
                positions[t, lost[ok]] = found[ok]
                visible[t, lost[ok]] = True
        return TrackResult(positions=positions, visible=visible)

    def _match_reference(
        self, reference: np.ndarray, current: np.ndarray, queries: np.ndarray, guesses: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        start = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, 1, 2)
        guess = np.ascontiguousarray(guesses, dtype=np.float32).reshape(-1, 1, 2)
        # refine near the prediction only: a coarse pyramid level would let nearby texture pull it away
        params = {**self.lk_params, "maxLevel": 1, "flags": cv2.OPTFLOW_USE_INITIAL_FLOW}
        found, status, error = cv2.calcOpticalFlowPyrLK(reference, current, start, guess.copy(), **params)
        back, status_back, _ = cv2.calcOpticalFlowPyrLK(current, reference, found, start.copy(), **params)
        ok = (
            (status.reshape(-1) == 1)
            & (status_back.reshape(-1) == 1)
            & (np.linalg.norm(back - start, axis=-1).reshape(-1) <= self.fb_threshold)
        )
        return found.reshape(-1, 2), ok

    def _looks_like_reference(
        self, reference: np.ndarray, current: np.ndarray, indices: np.ndarray, positions: np.ndarray
    ) -> np.ndarray:
        if self.min_correlation <= -1 or not len(indices):
            return np.ones(len(indices), dtype=bool)
        return _correlation(reference[indices], _patches(current, positions, self.patch_size)) >= self.min_correlation


def _patches(gray: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear `[K, size * size]` float32 patches centred on `points` `[K, 2]` (one `cv2.remap` call)."""
    offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2
    grid_x = points[:, 0, None, None] + offsets[None, None, :]
    grid_y = points[:, 1, None, None] + offsets[None, :, None]
    map_x = np.ascontiguousarray(
        np.broadcast_to(grid_x, (len(points), size, size)).reshape(-1, size), dtype=np.float32
    )
    map_y = np.ascontiguousarray(
        np.broadcast_to(grid_y, (len(points), size, size)).reshape(-1, size), dtype=np.float32
    )
    if not len(points):
        return np.zeros((0, size * size), dtype=np.float32)
    sampled = cv2.remap(gray.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(len(points), size * size)


def _correlation(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of matching rows. A flat reference patch (an untextured object)
    cannot be judged and matches anything; a flat current patch under a textured reference does not."""
    a = reference - reference.mean(axis=1, keepdims=True)
    b = current - current.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    floor = 1e-3 * a.shape[1]
    correlation = (a * b).sum(axis=1) / np.maximum(norm_a * norm_b, 1e-6)
    return np.where(norm_a < floor, 1.0, np.where(norm_b < floor, 0.0, correlation))


class LucasKanadeTracker(_FrameToFrameTracker):
    """Pyramidal Lucas-Kanade (`cv2.calcOpticalFlowPyrLK`) with a forward-backward consistency check."""

    def __init__(
        self,
        win_size: int = 15,
        max_level: int = 3,
        fb_threshold: float = 1.0,
        max_iterations: int = 20,
        reacquire: bool = True,
        min_correlation: float = 0.5,
        patch_size: int = 9,
    ):
        self.fb_threshold, self.reacquire = fb_threshold, reacquire
        self.min_correlation, self.patch_size = min_correlation, patch_size
        self.lk_params = {
            "winSize": (win_size, win_size),
            "maxLevel": max_level,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, max_iterations, 0.01),
        }

    def step(self, previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 1, 2)
        forward, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **self.lk_params)
        backward, status_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, **self.lk_params)
        error = np.linalg.norm(backward - start, axis=-1).reshape(-1)
        ok = (status.reshape(-1) == 1) & (status_back.reshape(-1) == 1) & (error <= self.fb_threshold)
        return forward.reshape(-1, 2), ok


class FarnebackTracker(_FrameToFrameTracker):
    """Dense Farneback optical flow in both directions, read at the points (bilinear)."""

    def __init__(
        self,
        fb_threshold: float = 1.0,
        levels: int = 3,
        win_size: int = 15,
        iterations: int = 3,
        reacquire: bool = True,
        min_correlation: float = 0.5,
        patch_size: int = 9,
    ):
        self.fb_threshold, self.reacquire = fb_threshold, reacquire
        self.min_correlation, self.patch_size = min_correlation, patch_size
        self.lk_params = {"winSize": (15, 15), "maxLevel": levels}
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
