"""Annotation manifests: which videos to annotate, with which captions and event times.

The native manifest is JSON Lines (or a JSON list), one video per record:

    {"id": str, "video": str (absolute, or relative to the manifest's folder), "duration": float (optional),
     "events": [{"caption": str, "start": float, "end": float (seconds),
                 "phrases": [{"text": str, "char_span": [b, e] (optional), "mask": {...} (optional)}] (optional)}]}

Without `phrases` the phrase backend finds them in the caption; a phrase's `mask` feeds the "given"
grounder. Converters read the public formats the PiTe data came from:

- InternVid (CSV or JSON Lines): one clip per row, `YoutubeID, Start_timestamp, End_timestamp
  ("HH:MM:SS.mmm"), Caption`; rows of one YouTube video become the events of one record, the video
  file is `{video_root}/{YoutubeID}{ext}`.
- ActivityNet Captions (JSON): `{"v_xxx": {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from processing.data_format import DataFormatError, RecordValidator, read_records, resolve_media_path

__all__ = ["MANIFEST_FORMATS", "parse_timestamp", "read_manifest"]

_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


def parse_timestamp(value: str | float | int) -> float:
    """`"HH:MM:SS.mmm"` / `"MM:SS.mmm"` / seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    match = _TIMESTAMP.match(text)
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return float(text)  # raises ValueError with the text in it


def _events(record: RecordValidator) -> list[dict[str, Any]]:
    events = []
    for i, _ in enumerate(record.get("events", list)):
        field = f"events[{i}]"
        caption = record.get(f"{field}.caption", str)
        start, end = record.get(f"{field}.start", float), record.get(f"{field}.end", float)
        if end < start:
            record.fail(field, f"end {end} is before start {start}")
        event: dict[str, Any] = {"caption": caption, "start": start, "end": end}
        phrases = record.get(f"{field}.phrases", list, required=False)
        if phrases is not None:
            event["phrases"] = []
            for j, _ in enumerate(phrases):
                text = record.get(f"{field}.phrases[{j}].text", str)
                span = record.get(f"{field}.phrases[{j}].char_span", list, required=False)
                if span is None:
                    begin = caption.find(text)
                    span = [begin, begin + len(text)] if begin >= 0 else [0, 0]
                elif len(span) != 2 or caption[span[0] : span[1]] != text:
                    record.fail(f"{field}.phrases[{j}].char_span", f"{span} does not cover {text!r} in the caption")
                event["phrases"].append(
                    {
                        "text": text,
                        "char_span": list(span),
                        "mask": record.get(f"{field}.phrases[{j}].mask", dict, required=False),
                    }
                )
        events.append(event)
    return events


def _read_pite(path: Path, video_root: str | None, ext: str) -> list[dict[str, Any]]:
    items = []
    for index, raw in read_records(path):
        record = RecordValidator(path, index, raw, id_field="id")
        item = {
            "id": str(record.get("id", (str, int))),
            "video": resolve_media_path(record.get("video", str), path, video_root),
            "duration": record.get("duration", float, required=False),
            "events": _events(record),
        }
        for event in item["events"]:
            for phrase in event.get("phrases", []):
                if phrase["mask"] and "png" in phrase["mask"]:
                    phrase["mask"] = {
                        **phrase["mask"],
                        "png": resolve_media_path(phrase["mask"]["png"], path, video_root),
                    }
        items.append(item)
    return items


def _video_path(root: Path, video_id: str, ext: str) -> str:
    if ext:
        return str(root / f"{video_id}{ext}")
    matches = sorted(root.glob(f"{video_id}.*"))  # ActivityNet ships .mp4, .mkv and .webm
    return str(matches[0] if matches else root / f"{video_id}.mp4")


def _read_internvid(path: Path, video_root: str | None, ext: str) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(enumerate(csv.DictReader(handle)))
    else:
        rows = list(read_records(path))
    root = Path(video_root) if video_root else path.resolve().parent
    by_video: dict[str, dict[str, Any]] = {}
    for index, row in rows:
        record = RecordValidator(path, index, row, id_field="YoutubeID")
        video_id = str(record.get("YoutubeID", str))
        times = []
        for field in ("Start_timestamp", "End_timestamp"):
            try:
                times.append(parse_timestamp(record.get(field, object)))
            except ValueError:
                record.fail(field, f"expected HH:MM:SS.mmm, got {record.record[field]!r}")
        item = by_video.setdefault(
            video_id, {"id": video_id, "video": _video_path(root, video_id, ext), "duration": None, "events": []}
        )
        item["events"].append({"caption": record.get("Caption", str), "start": times[0], "end": times[1]})
    return list(by_video.values())


def _read_activitynet(path: Path, video_root: str | None, ext: str) -> list[dict[str, Any]]:
    root = Path(video_root) if video_root else path.resolve().parent
    items = []
    for index, raw in read_records(path):
        record = RecordValidator(path, index, raw, id_field="id")
        timestamps, sentences = record.get("timestamps", list), record.get("sentences", list)
        if len(timestamps) != len(sentences):
            record.fail("timestamps", f"{len(timestamps)} timestamps but {len(sentences)} sentences")
        events = [
            {
                "caption": record.get(f"sentences[{i}]", str).strip(),
                "start": record.get(f"timestamps[{i}][0]", float),
                "end": record.get(f"timestamps[{i}][1]", float),
            }
            for i in range(len(sentences))
        ]
        video_id = str(record.get("id", str))
        items.append(
            {
                "id": video_id,
                "video": _video_path(root, video_id, ext),
                "duration": record.get("duration", float),
                "events": events,
            }
        )
    return items


MANIFEST_FORMATS = {"pite": _read_pite, "internvid": _read_internvid, "activitynet": _read_activitynet}


def _detect_format(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "internvid"
    for _, record in read_records(path):
        if isinstance(record, dict) and "YoutubeID" in record:
            return "internvid"
        if isinstance(record, dict) and "sentences" in record and "timestamps" in record:
            return "activitynet"
        return "pite"
    return "pite"


def read_manifest(
    path: str | Path, format: str = "auto", video_root: str | None = None, video_ext: str = ""
) -> list[dict[str, Any]]:
    """Read a manifest into records of the native shape (videos as absolute paths, times in seconds).

    Args:
        format: "auto" (from the file's suffix and first record), "pite", "internvid" or "activitynet".
        video_root: folder of the videos (default: the manifest's folder).
        video_ext: suffix of video files for the converters (InternVid/ActivityNet ids); empty means
            "any file named `{id}.*`".
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, None, "manifest file not found")
    name = _detect_format(path) if format == "auto" else format
    if name not in MANIFEST_FORMATS:
        raise ValueError(f"unknown manifest format {format!r}; use 'auto' or one of {sorted(MANIFEST_FORMATS)}")
    items = MANIFEST_FORMATS[name](path, video_root, video_ext)
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise DataFormatError(path, item["id"], "id", "duplicate id (ids name output records and must be unique)")
        seen.add(item["id"])
    return items
