"""Uniform frame sampling with PyAV, the way PiTe sees a video: N frames over the whole clip.

PiTe samples `linspace(0, T - 1, N)` (rounded) over the T frames of a video. Decoding every frame to
keep 100 of them is what makes naive loaders slow and memory-hungry on long videos, so `sample_video`
first reads the packet table (demuxing only, no decoding) to learn each frame's timestamp and the
keyframes, then decodes forward while the next target is close and seeks to the keyframe before it
when that skips work. Only the sampled frames are kept. Frames are identified by presentation
timestamp, so the result is pixel-identical to decoding everything and picking indices, also for
variable frame rate and for containers that do not report a frame count (MKV/WebM).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["VideoDecodeError", "VideoMetadata", "sample_frame_indices", "sample_video"]


class VideoDecodeError(ValueError):
    """A video that cannot be read; the message names the file and the cause."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")


@dataclass
class VideoMetadata:
    """What `sample_video` learned about a video and which frames it returned.

    `width`/`height` are the displayed size of the source (after rotation, before any resize).
    `frame_indices` index the video's frames in presentation order; `timestamps` are their times in
    seconds from the first frame. `corrupt_frames` lists sampled indices that failed to decode and
    were replaced by the nearest frame that decoded.
    """

    path: str
    fps: float
    duration: float
    total_frames: int
    width: int
    height: int
    frame_indices: list[int]
    timestamps: list[float]
    corrupt_frames: list[int] = field(default_factory=list)
    rotation: int = 0
    codec: str = ""


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """PiTe's uniform sampling: `round(linspace(0, T - 1, N))`; videos shorter than N repeat frames."""
    if total_frames < 1 or num_frames < 1:
        raise ValueError(f"need total_frames >= 1 and num_frames >= 1, got {total_frames} and {num_frames}")
    return np.round(np.linspace(0, total_frames - 1, num_frames)).astype(np.int64)


@dataclass
class _FrameTable:
    """Presentation timestamps of every frame (sorted) and which frames are keyframes, from the packets."""

    pts: np.ndarray  # [T] int64, stream time base, increasing
    keyframes: np.ndarray  # indices into `pts` of keyframes, increasing
    time_base: Fraction
    exact: bool  # False when packets lack timestamps or repeat them: then frames are counted instead
    truncated: bool

    @classmethod
    def scan(cls, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _FrameTable:
        timestamps, is_key, exact, truncated = [], [], True, False
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                exact &= ts is not None
                timestamps.append(ts if ts is not None else len(timestamps))
                is_key.append(packet.is_keyframe)
        except av.FFmpegError:
            truncated = True  # keep the frames demuxed before the damage
        pts = np.asarray(timestamps, dtype=np.int64)
        order = np.argsort(pts, kind="stable")
        pts = pts[order]
        exact &= bool(np.all(np.diff(pts) > 0))
        keyframes = np.flatnonzero(np.asarray(is_key, dtype=bool)[order]) if len(pts) else np.zeros(0, np.int64)
        return cls(
            pts=pts,
            keyframes=keyframes,
            time_base=stream.time_base or Fraction(1, 1),
            exact=exact,
            truncated=truncated,
        )

    def __len__(self) -> int:
        return len(self.pts)

    def seconds(self, indices: np.ndarray) -> np.ndarray:
        return (self.pts[indices] - self.pts[0]).astype(np.float64) * float(self.time_base)

    def index_of(self, pts: int) -> int | None:
        index = int(np.searchsorted(self.pts, pts))
        return index if index < len(self.pts) and self.pts[index] == pts else None

    def keyframe_before(self, index: int, steps_back: int = 0) -> int:
        """The keyframe at or before frame `index`, `steps_back` keyframes earlier; 0 if there is none."""
        position = int(np.searchsorted(self.keyframes, index, side="right")) - 1 - steps_back
        return int(self.keyframes[position]) if position >= 0 else 0


class _SeekFailed(Exception):
    """The demuxer cannot seek in this file; the caller falls back to decoding from the start."""


def _decoded(
    container, stream, seek_pts: int | None, wanted_pts: set[int] | None = None
) -> Iterator[tuple[int | None, av.VideoFrame | None]]:
    """Yield `(pts, frame)` from `seek_pts` on; a packet that fails to decode yields `(its pts, None)`.

    With `wanted_pts`, packets of other frames are decoded with `skip_frame="NONREF"`: frames no other
    frame references are then not decoded at all (a third of an x264 stream), which changes no pixel of
    the frames that are decoded. Decoders without that feature decode everything.
    """
    if seek_pts is not None:
        try:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as error:
            raise _SeekFailed from error
    context = stream.codec_context
    for packet in container.demux(stream):
        if wanted_pts is not None:
            context.skip_frame = "NONREF" if packet.pts is not None and packet.pts not in wanted_pts else "DEFAULT"
        try:
            frames = packet.decode()
        except av.FFmpegError:
            if packet.size:
                yield (packet.pts if packet.pts is not None else packet.dts), None
            continue
        for frame in frames:
            yield frame.pts, frame


class _Converter:
    """RGB conversion in swscale (with the optional resize), then rotation to the displayed orientation."""

    def __init__(self, frame: av.VideoFrame, size: int | tuple[int, int] | None):
        self.rotation = int(round(frame.rotation or 0)) % 360
        self.turns = (self.rotation // 90) % 4  # counter-clockwise quarter turns, as np.rot90 counts them
        height, width = frame.height, frame.width
        self.display = (width, height) if self.turns % 2 else (height, width)
        out_h, out_w = _output_size(self.display, size)
        self.scale = (out_w, out_h) if self.turns % 2 else (out_h, out_w)  # (height, width) before rotation

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        height, width = self.scale
        array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
        return np.ascontiguousarray(np.rot90(array, self.turns)) if self.turns else array


def _output_size(display: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    height, width = display
    if size is None:
        return height, width
    if isinstance(size, int):  # shortest edge
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return int(size[0]), int(size[1])


def sample_video(
    path: str | Path,
    num_frames: int = 100,
    *,
    start: float | None = None,
    end: float | None = None,
    size: int | tuple[int, int] | None = None,
) -> tuple[np.ndarray, VideoMetadata]:
    """Sample `num_frames` frames uniformly over a video (or over `[start, end]` seconds of it).

    Args:
        path: a video file PyAV/FFmpeg can read.
        num_frames: frames to return; a video with fewer frames repeats some, as PiTe does.
        start, end: optional segment in seconds from the first frame; frames inside it are sampled.
        size: optional resize done by swscale while converting to RGB: `(height, width)` of the
            output, or an int for the shortest edge (aspect ratio kept).

    Returns:
        `(frames, metadata)` with frames a `[num_frames, H, W, 3]` uint8 array, rotated as the video
        is meant to be displayed.

    Raises:
        VideoDecodeError: the file is missing, not a video, has no video stream, or no frame decodes.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container)
        table = _FrameTable.scan(container, stream)
        if not len(table):
            raise VideoDecodeError(path, "the video stream holds no frames")
        fps, duration, codec = _fps(stream, table), _duration(container, stream, table), stream.codec_context.name
        candidates = _segment(path, table, start, end)
        indices = candidates[sample_frame_indices(len(candidates), num_frames)]
        targets = np.unique(indices)
        decoded = None
        if table.exact and len(table.keyframes):
            with contextlib.suppress(_SeekFailed):
                decoded = _sample_by_pts(container, stream, table, targets, size)
    if decoded is None:  # no usable timestamps or keyframe index: decode from the start and count frames
        with _open(path) as container:
            decoded = _sample_by_count(container, _video_stream(container), targets, size)
    frames_by_index, corrupt, converter = decoded
    if not frames_by_index:
        raise VideoDecodeError(path, "no frame could be decoded (corrupt or truncated file)")
    frames = np.stack([frames_by_index[int(i)] for i in indices])
    metadata = VideoMetadata(
        path=str(path),
        fps=fps,
        duration=duration,
        total_frames=len(table),
        width=converter.display[1],
        height=converter.display[0],
        frame_indices=[int(i) for i in indices],
        timestamps=[float(t) for t in table.seconds(indices)],
        corrupt_frames=sorted(corrupt),
        rotation=converter.rotation,
        codec=codec,
    )
    return frames, metadata


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"not a readable video file ({error})") from error
    if _video_stream(container) is None:
        container.close()
        raise VideoDecodeError(path, "the file has no video stream")
    return container


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream: cover art (an `attached_pic` "video" stream of one image) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _segment(path: Path, table: _FrameTable, start: float | None, end: float | None) -> np.ndarray:
    """Indices of the frames whose time lies in `[start, end]` (all frames when both are None)."""
    all_indices = np.arange(len(table))
    if start is None and end is None:
        return all_indices
    lo = -math.inf if start is None else float(start)
    hi = math.inf if end is None else float(end)
    if hi < lo:
        raise VideoDecodeError(path, f"segment end {end} is before start {start}")
    times = table.seconds(all_indices)
    inside = all_indices[(times >= lo) & (times <= hi)]
    if not len(inside):
        raise VideoDecodeError(path, f"no frame between {start} s and {end} s (video lasts {times[-1]:.3f} s)")
    return inside


def _sample_by_pts(container, stream, table: _FrameTable, targets: np.ndarray, size):
    """Decode the target frames (sorted unique indices), seeking when a keyframe lies between targets."""
    out: dict[int, np.ndarray] = {}
    corrupt: set[int] = set()
    pending = deque(int(t) for t in targets)
    wanted_pts = {int(table.pts[t]) for t in targets}
    converter = None
    steps_back = 0
    while pending:
        keyframe = table.keyframe_before(pending[0], steps_back)
        previous = None  # (index, frame) of the last good frame in this pass
        overshot = False
        for pts, frame in _decoded(container, stream, int(table.pts[keyframe]), wanted_pts):
            index = table.index_of(pts) if pts is not None else None
            if frame is None or index is None:
                continue
            if previous is None and index > pending[0] and keyframe > 0:
                overshot = True  # the seek landed past the target: retry from an earlier keyframe
                break
            if index < pending[0]:
                previous = (index, frame)
                continue
            converter = converter or _Converter(frame, size)
            while pending and pending[0] <= index:
                target = pending.popleft()
                if target == index:
                    out[target] = converter(frame)
                else:  # the target never came out of the decoder: use the nearest frame that did
                    corrupt.add(target)
                    use_previous = previous is not None and target - previous[0] <= index - target
                    out[target] = converter(previous[1] if use_previous else frame)
            previous = (index, frame)
            if not pending or table.keyframe_before(pending[0]) > index + 1:
                break  # seeking to that keyframe skips decoding the frames in between
        else:
            if pending and previous is not None:  # the stream ended early: repeat the last good frame
                converter = converter or _Converter(previous[1], size)
                for target in pending:
                    corrupt.add(target)
                    out[target] = converter(previous[1])
            pending.clear()
        steps_back = steps_back + 1 if overshot else 0
    return out, corrupt, converter


def _sample_by_count(container, stream, targets: np.ndarray, size):
    """Fallback for streams without usable timestamps: decode in order and count frames."""
    out: dict[int, np.ndarray] = {}
    wanted = {int(t) for t in targets}
    converter = None
    count = 0
    for _, frame in _decoded(container, stream, None):
        if frame is None:
            continue
        if count in wanted:
            converter = converter or _Converter(frame, size)
            out[count] = converter(frame)
        count += 1
        if count > targets[-1]:
            break
    corrupt = wanted - out.keys()
    if out:
        decoded = np.array(sorted(out))
        for target in corrupt:
            out[target] = out[int(decoded[np.argmin(np.abs(decoded - target))])]
    return out, corrupt, converter


def _fps(stream, table: _FrameTable) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(rate)
    span = float(table.seconds(np.array([len(table) - 1]))[0])
    return (len(table) - 1) / span if span > 0 else 0.0


def _duration(container, stream, table: _FrameTable) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    fps = _fps(stream, table)
    return float(table.seconds(np.array([len(table) - 1]))[0]) + (1.0 / fps if fps else 0.0)
