"""From an object's mask and its point tracks to P keypoint trajectories (k-means++), PiTe's last step.

The keypoints are the k-means++ centres of the object's mask pixels on the first frame, so each is a
fixed part of the object (its left end, its middle, ...) whatever points the tracker happened to get.
Every tracked point belongs to its nearest centre. A keypoint's position in a frame is its centre moved
by the mean displacement of its member tracks visible in that frame: unlike the plain mean of the
visible members, it does not jump when some members are occluded or leave the view. A keypoint is
visible when at least `min_visible_fraction` of its members are and its position is inside the frame;
otherwise it is `(-1, -1)`.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

__all__ = ["assign_to_keypoints", "keypoint_centres", "keypoint_trajectories"]


def keypoint_centres(mask: np.ndarray, num_keypoints: int = 3, seed: int = 0, max_pixels: int = 1000) -> np.ndarray:
    """k-means++ centres `[P, 2]` (pixel (x, y)) of the mask's pixels, ordered top to bottom, left to right.

    Uses `n_init=10` (scikit-learn's default "auto" runs k-means++ once) on at most `max_pixels`
    evenly spaced pixels. A mask with fewer distinct pixels than keypoints repeats centres.
    """
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("cannot place keypoints on an empty mask")
    pixels = np.stack([xs, ys], axis=1).astype(np.float64)
    if len(pixels) > max_pixels:
        pixels = pixels[np.linspace(0, len(pixels) - 1, max_pixels).round().astype(int)]
    if len(pixels) < num_keypoints:
        centres = pixels[np.arange(num_keypoints) % len(pixels)]
    else:
        # one OpenMP thread: on a few hundred points extra workers only spin (seconds on a busy machine)
        with threadpool_limits(limits=1):
            kmeans = KMeans(n_clusters=num_keypoints, init="k-means++", n_init=10, random_state=seed).fit(pixels)
        centres = kmeans.cluster_centers_
    return centres[np.lexsort((centres[:, 0], centres[:, 1]))]


def assign_to_keypoints(points: np.ndarray, centres: np.ndarray, min_members: int = 3) -> list[np.ndarray]:
    """Member indices of each centre: the points nearest to it, or its `min_members` nearest if none are."""
    distances = np.linalg.norm(points[:, None] - centres[None], axis=-1)  # [M, P]
    nearest = distances.argmin(axis=1)
    members = []
    for keypoint in range(len(centres)):
        chosen = np.flatnonzero(nearest == keypoint)
        if not len(chosen):
            chosen = np.argsort(distances[:, keypoint])[:min_members]
        members.append(chosen)
    return members


def keypoint_trajectories(
    positions: np.ndarray,
    visible: np.ndarray,
    centres: np.ndarray,
    frame_size: tuple[int, int],
    min_visible_fraction: float = 0.5,
) -> np.ndarray:
    """Keypoint trajectories `[P, T, 2]` in [0, 1] of (width, height), `-1` where not visible.

    Args:
        positions: `[T, M, 2]` pixel (x, y) tracks, frame 0 being the frame the mask is on.
        visible: `[T, M]` bool.
        centres: `[P, 2]` keypoints on frame 0 (`keypoint_centres`).
        frame_size: `(height, width)`; a pixel-centre coordinate `x` maps to `(x + 0.5) / width`, so
            [0, 1] spans the image edge to edge.
    """
    height, width = frame_size
    out = np.full((len(centres), positions.shape[0], 2), -1.0, dtype=np.float32)
    for keypoint, members in enumerate(assign_to_keypoints(positions[0], centres)):
        tracks, seen = positions[:, members], visible[:, members]
        counts = seen.sum(axis=1)
        moved = np.where(seen[..., None], tracks - tracks[0], 0.0).sum(axis=1) / np.maximum(counts, 1)[:, None]
        normalised = (centres[keypoint] + moved + 0.5) / np.array([width, height], dtype=np.float64)
        ok = (counts >= max(1.0, min_visible_fraction * len(members))) & np.all(
            (normalised >= 0) & (normalised <= 1), axis=1
        )
        out[keypoint, ok] = normalised[ok]
    return out
