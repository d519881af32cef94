"""The geometry of the synthetic world: textured shapes translating over a static background.

A `VideoSpec` is everything needed to render a video and to answer exact questions about it: where a
point on an object is at any time and whether it can be seen. Objects are drawn in list order (index 0
at the bottom), each as a fixed sprite (shape mask + random high-contrast texture in the object's hue)
pasted at an integer offset, so motion is a pure translation and tracking ground truth is exact.

Coordinates: pixel positions use OpenCV's convention (the centre of pixel row `i`, column `j` is
`(x=j, y=i)`); normalised coordinates are `((x + 0.5) / W, (y + 0.5) / H)`, so `[0, 1]` covers the image
edge to edge, like Localized Narratives' mouse traces (`pixels_to_normalized`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from modeling_pite.video_io import sample_frame_indices

__all__ = [
    "COLORS",
    "SHAPES",
    "ObjectSpec",
    "VideoSpec",
    "normalized_to_pixels",
    "pixels_to_normalized",
]

# Saturated colours that stay recognisable after texturing (which only scales brightness, so the hue
# is kept) and that a colour lexicon can separate from the grey background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 20),
    "purple": (160, 40, 220),
    "orange": (250, 130, 10),
}
SHAPES = ("circle", "square", "triangle")
# Texture cell brightness levels: high contrast for the tracker, same hue for the colour name.
_TEXTURE_LEVELS = np.array([0.4, 0.6, 0.8, 1.0])
# Times are compared with this slack so that frame times computed as k / fps land on the right side.
_TIME_EPS = 1e-6


@functools.cache
def _threadpool_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _single_thread():
    """OpenMP threads cost far more than they save in k-means over a few hundred points (and they
    oversubscribe a busy machine); the controller is built once, its library scan is slow."""
    return _threadpool_controller().limit(limits=1)


def pixels_to_normalized(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel-centre coordinates `[..., 2]` to `[0, 1]` of the frame (see the module docstring)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / np.array([width, height], dtype=np.float64)


def normalized_to_pixels(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of `pixels_to_normalized`."""
    return np.asarray(xy, dtype=np.float64) * np.array([width, height], dtype=np.float64) - 0.5


def shape_mask(shape: str, size: int) -> np.ndarray:
    """`[size, size]` bool mask of a shape filling its box (pixel centres tested against the outline)."""
    centre = np.arange(size) + 0.5
    y, x = np.meshgrid(centre, centre, indexing="ij")
    if shape == "circle":
        return (x - size / 2) ** 2 + (y - size / 2) ** 2 <= (size / 2) ** 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return np.abs(x - size / 2) <= y / 2
    raise ValueError(f"unknown shape {shape!r}, expected one of {SHAPES}")


def _on_shape(obj: ObjectSpec, local: np.ndarray) -> np.ndarray:
    """Whether sprite-local integer pixels `[..., 2]` (x, y) fall on `obj`'s shape."""
    inside = np.all((local >= 0) & (local < obj.size), axis=-1)
    clipped = np.clip(local, 0, obj.size - 1)
    return inside & obj.mask[clipped[..., 1], clipped[..., 0]]


@dataclass
class ObjectSpec:
    """One object: a textured sprite moving along a piecewise-linear path of its centre.

    `keyframes` are `(t, x, y)`: time in seconds and the sprite centre in pixels; the first time is
    when the object appears and the last when it disappears (it is present on `[first, last)`).
    """

    color: str
    shape: str
    size: int
    keyframes: list[tuple[float, float, float]]
    texture_seed: int

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}, expected one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}, expected one of {SHAPES}")
        if len(self.keyframes) < 2 or any(b[0] < a[0] for a, b in zip(self.keyframes, self.keyframes[1:])):
            raise ValueError(f"{self.name}: need >= 2 keyframes in time order, got {self.keyframes}")
        self.keyframes = [tuple(float(v) for v in keyframe) for keyframe in self.keyframes]
        self._mask = shape_mask(self.shape, self.size)
        self._path = np.asarray(self.keyframes).T  # [3, K]: times, xs, ys
        cell = max(2, self.size // 10)
        cells = -(-self.size // cell)
        levels = np.random.default_rng(self.texture_seed).choice(_TEXTURE_LEVELS, size=(cells, cells))
        levels = np.kron(levels, np.ones((cell, cell)))
        self._texture = np.round(levels[: self.size, : self.size, None] * np.array(self.rgb)).astype(np.uint8)

    @property
    def name(self) -> str:
        """What the lexicon calls it, e.g. "red circle"."""
        return f"{self.color} {self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    @property
    def appear(self) -> float:
        return self.keyframes[0][0]

    @property
    def disappear(self) -> float:
        return self.keyframes[-1][0]

    @property
    def mask(self) -> np.ndarray:
        """`[size, size]` bool: the sprite's shape."""
        return self._mask

    @property
    def texture(self) -> np.ndarray:
        """`[size, size, 3]` uint8: the sprite's pixels (meaningful where `mask` is set)."""
        return self._texture

    def present(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return (t >= self.appear - _TIME_EPS) & (t < self.disappear - _TIME_EPS)

    def center(self, t: np.ndarray | float) -> np.ndarray:
        """Centre `[..., 2]` in pixels at times `t` (held constant outside the keyframes)."""
        times, xs, ys = self._path
        t = np.asarray(t, dtype=np.float64)
        return np.stack([np.interp(t, times, xs), np.interp(t, times, ys)], axis=-1)

    def offset(self, t: np.ndarray | float) -> np.ndarray:
        """Integer pixel position `[..., 2]` (x, y) of the sprite's top-left pixel at times `t`."""
        return np.floor(self.center(t) - self.size / 2 + 0.5).astype(np.int64)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class VideoSpec:
    """A synthetic video (or, with one frame, an image): size, timing, background and objects."""

    video_id: str
    width: int
    height: int
    fps: float
    num_frames: int
    background_seed: int
    objects: list[ObjectSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects = [obj if isinstance(obj, ObjectSpec) else ObjectSpec(**obj) for obj in self.objects]
        self._background = None

    @classmethod
    def from_dict(cls, data: dict) -> VideoSpec:
        return cls(**data)

    def to_dict(self) -> dict:
        return {
            "video_id": self.video_id,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "background_seed": self.background_seed,
            "objects": [obj.to_dict() for obj in self.objects],
        }

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def frame_times(self) -> np.ndarray:
        """Time in seconds of every frame (frame k is shown at k / fps)."""
        return np.arange(self.num_frames) / self.fps

    def sampled_frame_times(self, num_frames: int = 100) -> np.ndarray:
        """Times of the frames PiTe samples (`round(linspace(0, T - 1, N))`), where trajectories live."""
        return sample_frame_indices(self.num_frames, num_frames) / self.fps

    # ---------------------------------------------------------------- rendering

    @property
    def background(self) -> np.ndarray:
        """`[H, W, 3]` uint8 static grey background: smooth low-contrast blobs plus mild pixel noise."""
        if self._background is None:
            rng = np.random.default_rng(self.background_seed)
            coarse = rng.uniform(90, 150, size=(max(2, self.height // 8), max(2, self.width // 8)))
            smooth = Image.fromarray(coarse.astype(np.float32), mode="F").resize(
                (self.width, self.height), Image.Resampling.BICUBIC
            )
            grey = np.asarray(smooth) + rng.normal(0, 4, size=(self.height, self.width))
            self._background = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return self._background

    def render_frame(self, t: float) -> np.ndarray:
        """The frame at time `t` as `[H, W, 3]` uint8."""
        frame = self.background.copy()
        for obj in self.objects:
            if not obj.present(t):
                continue
            (x0, y0), size = obj.offset(t), obj.size
            top, bottom = max(y0, 0), min(y0 + size, self.height)
            left, right = max(x0, 0), min(x0 + size, self.width)
            if top >= bottom or left >= right:
                continue
            local = (slice(top - y0, bottom - y0), slice(left - x0, right - x0))
            region = frame[top:bottom, left:right]
            region[obj.mask[local]] = obj.texture[local][obj.mask[local]]
        return frame

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order, one at a time (for `write_video`)."""
        for t in self.frame_times:
            yield self.render_frame(float(t))

    # ---------------------------------------------------------------- ground truth

    def track_points(
        self, object_index: int, xy: np.ndarray, t0: float, times: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where points on object `object_index`, at pixel positions `xy` `[K, 2]` at time `t0`, are at `times`.

        Returns positions `[T, K, 2]` (pixels; the object translates, so this is defined even when a
        point is hidden) and visibility `[T, K]`: the object is present, the point lies on its shape,
        inside the frame, and no object drawn above it covers it.
        """
        obj = self.objects[object_index]
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        local = xy - obj.offset(t0)
        positions = local[None] + obj.offset(times)[:, None]
        frame_pixel = np.floor(positions + 0.5).astype(np.int64)  # [T, K, 2]
        visible = (
            obj.present(times)[:, None]
            & _on_shape(obj, np.floor(local + 0.5).astype(np.int64))[None]
            & np.all((frame_pixel >= 0) & (frame_pixel < [self.width, self.height]), axis=2)
        )
        for above in self.objects[object_index + 1 :]:
            covered = _on_shape(above, frame_pixel - above.offset(times)[:, None])
            visible &= ~(covered & above.present(times)[:, None])
        return positions, visible

    def point_track(
        self, object_index: int, xy_at_t0: Sequence[float], t0: float, times: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One point's track: positions `[T, 2]` in pixels and visibility `[T]` (see `track_points`)."""
        positions, visible = self.track_points(object_index, np.asarray(xy_at_t0)[None], t0, times)
        return positions[:, 0], visible[:, 0]

    def visible_area(self, object_index: int, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """`[T]` number of visible pixels of object `object_index` at each time."""
        obj = self.objects[object_index]
        ys, xs = np.nonzero(obj.mask)
        t0 = obj.appear
        _, visible = self.track_points(object_index, np.stack([xs, ys], axis=1) + obj.offset(t0), t0, times)
        return visible.sum(axis=1)

    def object_mask(self, object_index: int, t: float) -> np.ndarray:
        """`[H, W]` bool: the visible part of object `object_index` at time `t`."""
        obj = self.objects[object_index]
        mask = np.zeros((self.height, self.width), dtype=bool)
        if not obj.present(t):
            return mask
        ys, xs = np.nonzero(obj.mask)
        pixels = np.stack([xs, ys], axis=1) + obj.offset(t)
        _, visible = self.track_points(object_index, pixels, t, [t])
        pixels = pixels[visible[0]]
        mask[pixels[:, 1], pixels[:, 0]] = True
        return mask

    def keypoint_trajectories(
        self,
        object_index: int,
        t0: float,
        num_points: int = 3,
        num_frames: int = 100,
        span: tuple[float, float] | None = None,
        min_visible_fraction: float = 0.5,
    ) -> np.ndarray:
        """`[P, N, 2]` keypoint trajectories in [0, 1] of an object, as the annotation pipeline defines them.

        The object's visible pixels at `t0` (its whole shape when none is visible then) are split into
        `num_points` groups by k-means++; keypoint p is its group's centroid, carried along with the
        object, at each of the N sampled frames. It is (-1, -1) where fewer than `min_visible_fraction`
        of the group's pixels are visible, where it falls outside the frame, and, given `span`
        (seconds, an event), at frames outside `[start, end]`. Keypoints are ordered by their position
        at `t0`: top to bottom, then left to right.
        """
        from sklearn.cluster import KMeans

        obj = self.objects[object_index]
        visible_now = self.object_mask(object_index, t0)
        if visible_now.any():
            ys, xs = np.nonzero(visible_now)
            pixels = np.stack([xs, ys], axis=1).astype(np.float64)
        else:  # hidden or outside: use the whole shape where it would be
            ys, xs = np.nonzero(obj.mask)
            pixels = (np.stack([xs, ys], axis=1) + obj.offset(t0)).astype(np.float64)
        num_clusters = min(num_points, len(pixels))
        with _single_thread():
            labels = KMeans(num_clusters, init="k-means++", n_init=1, random_state=0).fit_predict(pixels)
        centres = np.stack([pixels[labels == c].mean(axis=0) for c in range(num_clusters)])
        order = np.lexsort((centres[:, 0], centres[:, 1]))
        times = self.sampled_frame_times(num_frames)
        _, visible = self.track_points(object_index, pixels, t0, times)
        positions, _ = self.track_points(object_index, centres[order], t0, times)
        normalized = pixels_to_normalized(positions, self.width, self.height)  # [N, P', 2]
        keep = np.stack([visible[:, labels == cluster].mean(axis=1) >= min_visible_fraction for cluster in order], 1)
        keep &= np.all((normalized >= 0) & (normalized <= 1), axis=2)
        if span is not None:
            keep &= ((times >= span[0] - _TIME_EPS) & (times <= span[1] + _TIME_EPS))[:, None]
        result = np.where(keep[..., None], normalized, -1.0).transpose(1, 0, 2)
        # fewer pixels than points (a sliver): repeat the last keypoint so the shape stays [P, N, 2]
        return np.concatenate([result, np.repeat(result[-1:], num_points - num_clusters, axis=0)])
