"""Write frame arrays to a video file with PyAV (used by the synthetic world, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec -> pixel format it is written with; yuv420p codecs need even frame sizes.
_PIXEL_FORMATS = {
    "libx264": "yuv420p",
    "libx264rgb": "rgb24",
    "libx265": "yuv420p",
    "mpeg4": "yuv420p",
    "libvpx-vp9": "yuv420p",
    "libvpx": "yuv420p",
    "libaom-av1": "yuv420p",
    "libsvtav1": "yuv420p",
    "ffv1": "yuv444p",
}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 10.0,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB uint8 frames `[H, W, 3]` into `path`; the container comes from the suffix.

    `frames` may be a generator, so long videos are written without holding them in memory.
    Lossless choices for exact comparisons: `codec="libx264rgb", options={"qp": "0"}` or `"ffv1"`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pix_fmt = _PIXEL_FORMATS.get(codec, "yuv420p")
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"{path}: frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
            if stream is None:
                height, width = frame.shape[:2]
                if pix_fmt == "yuv420p" and (height % 2 or width % 2):
                    raise ValueError(f"{path}: {codec} with yuv420p needs even width and height, got {width}x{height}")
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
                stream.options = dict(options or {})
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path
