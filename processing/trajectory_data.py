"""Stage 2 data: per-video events with noun-phrase trajectories (our PiTe-143k format) as training records.

PiTe never published the schema of PiTe-143k, so this is ours (docs/data_formats.md), written by the
annotation pipeline and read here, one record per video:

    {"id": str, "video": str, "duration": float,
     "events": [{"caption": str, "start": float, "end": float,
                 "phrases": [{"text": str, "char_span": [begin, end],
                              "trajectory": [P][N][2] floats in [0, 1], -1 where absent}]}]}

The N trajectory frames are sampled uniformly over the whole video, like the model's input frames.
A record becomes one dense-captioning dialogue: every event, in time order, written with its frame
span ("From 05 to 37, the red circle moves left.") and every phrase's trajectory attached to the
characters of the phrase in that answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from datasets import Dataset

from modeling_pite.temporal import format_event, seconds_to_frame_index

from .data_format import RecordValidator, build_dataset, read_records, resolve_media_path

__all__ = ["DENSE_CAPTION_PROMPTS", "load_trajectory_data"]

DENSE_CAPTION_PROMPTS = (
    "Describe the events in the video and when each one happens.",
    "Could you please describe the events in the video in detail? Give the start and end frames of each event.",
    "What happens in the video? Tell me the frames of every event.",
)
# Trajectory coordinates may overshoot [0, 1] by rounding; more than this is an error.
_COORD_TOLERANCE = 1e-3


def _trajectory(record: RecordValidator, field: str, num_points: int | None, num_frames: int | None) -> list:
    """Check a `[P][N][2]` trajectory (shape and values) and return it with values clipped to [0, 1]."""
    value = record.get(field, list)
    shape = _shape(value)
    expected = (num_points or "P", num_frames or "N", 2)
    if (
        shape is None
        or len(shape) != 3
        or shape[2] != 2
        or (num_points is not None and shape[0] != num_points)
        or (num_frames is not None and shape[1] != num_frames)
    ):
        found = "a ragged nested list" if shape is None else f"shape {list(shape)}"
        record.fail(field, f"expected a trajectory of shape {list(expected)}, got {found}")
    clipped = []
    for p, point in enumerate(value):
        row = []
        for n, (x, y) in enumerate(point):
            for axis, v in (("x", x), ("y", y)):
                v = record.check(f"{field}[{p}][{n}].{axis}", v, float)
                if v != -1.0 and not -_COORD_TOLERANCE <= v <= 1 + _COORD_TOLERANCE:
                    record.fail(f"{field}[{p}][{n}]", f"coordinates must be in [0, 1] or -1, got {[x, y]}")
            row.append([-1.0, -1.0] if -1.0 in (x, y) else [min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)])
        clipped.append(row)
    return clipped


def _shape(value) -> tuple[int, ...] | None:
    """Shape of a rectangular nested list, None when ragged; leaves are anything that is not a list."""
    if not isinstance(value, list):
        return ()
    shapes = {_shape(item) for item in value}
    if len(shapes) > 1 or None in shapes:
        return None
    return (len(value), *(shapes.pop() if shapes else ()))


def _records(
    path: str,
    video_folder: str | None,
    num_points: int | None,
    num_frames: int | None,
    num_time_bins: int,
    event_format: Literal["prefix", "suffix"],
    prompts: tuple[str, ...],
) -> Iterator[dict]:
    for index, raw in read_records(path):
        record = RecordValidator(path, index, raw, id_field="id")
        video_id = str(record.get("id", (str, int)))
        video = record.get("video", str)
        duration = record.get("duration", float)
        if duration <= 0:
            record.fail("duration", f"must be positive, got {duration}")
        events = []
        for e in range(len(record.get("events", list))):
            caption = record.get(f"events[{e}].caption", str)
            start = record.get(f"events[{e}].start", float)
            end = record.get(f"events[{e}].end", float)
            if not 0 <= start <= end:
                record.fail(f"events[{e}]", f"need 0 <= start <= end, got start={start} end={end}")
            phrases = []
            for k in range(len(record.get(f"events[{e}].phrases", list, required=False, default=[]))):
                field = f"events[{e}].phrases[{k}]"
                span = record.get(f"{field}.char_span", list)
                if not (
                    len(span) == 2 and all(type(i) is int for i in span) and 0 <= span[0] < span[1] <= len(caption)
                ):
                    record.fail(
                        f"{field}.char_span",
                        f"expected [begin, end] inside the caption (length {len(caption)}), got {span}",
                    )
                begin, stop = span
                text = record.get(f"{field}.text", str, required=False)
                if text is not None and caption[begin:stop].lower() != text.lower():
                    record.fail(
                        f"{field}.text", f"{text!r} does not match caption[{begin}:{stop}] = {caption[begin:stop]!r}"
                    )
                phrases.append(((begin, stop), _trajectory(record, f"{field}.trajectory", num_points, num_frames)))
            events.append((start, end, caption, phrases))
        if not events:
            record.fail("events", "no events")
        answer, trajectories = "", []
        for start, end, caption, phrases in sorted(events, key=lambda event: (event[0], event[1])):
            text = format_event(
                caption,
                seconds_to_frame_index(start, duration, num_time_bins),
                seconds_to_frame_index(end, duration, num_time_bins),
                position=event_format,
            )
            offset = len(answer) + (len(" ") if answer else 0) + _caption_offset(caption, text, event_format)
            answer = f"{answer} {text}" if answer else text
            for (begin, stop), trajectory in phrases:
                trajectories.append(
                    {"turn": 1, "char_span": [offset + begin, offset + stop], "trajectory": trajectory}
                )
        prompt = prompts[zlib.crc32(video_id.encode()) % len(prompts)]
        yield {
            "id": video_id,
            "video": resolve_media_path(video, path, video_folder),
            "media": "video",
            "conversations": [{"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": answer}],
            "points": [],
            "trajectories": trajectories,
        }


def _caption_offset(caption: str, text: str, event_format: str) -> int:
    """Where `caption[0]` landed in `format_event`'s output (it strips, and prefixes the span)."""
    stripped = len(caption) - len(caption.lstrip())
    if event_format == "suffix":
        return -stripped
    return text.index(", ") + 2 - stripped


def load_trajectory_data(
    path: str | Path,
    video_folder: str | Path | None = None,
    num_points: int | None = 3,
    num_frames: int | None = 100,
    num_time_bins: int = 100,
    event_format: Literal["prefix", "suffix"] = "prefix",
    prompts: tuple[str, ...] = DENSE_CAPTION_PROMPTS,
) -> Dataset:
    """Read and validate a stage-2 trajectory file (.jsonl, .json or .parquet) into training records.

    Every trajectory must be `[num_points][num_frames][2]` (None: any size, but one per file is still
    required by the model); a wrong shape raises `DataFormatError` naming the record and the phrase.
    `num_time_bins` is the number of frame indices the text uses for times (100 in PiTe).
    """
    return build_dataset(
        _records,
        path=path,
        video_folder=None if video_folder is None else str(video_folder),
        num_points=num_points,
        num_frames=num_frames,
        num_time_bins=num_time_bins,
        event_format=event_format,
        prompts=tuple(prompts),
    )
