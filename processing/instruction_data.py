"""Stage 3 data: video instruction dialogues (Video-ChatGPT, Valley, LLaVA, VTimeLLM) as training records.

Accepted shapes, one file may mix them:
- LLaVA / Valley conversations: `{"id", "video" (or "image"), "conversations": [{"from": "human" |
  "gpt", "value": str}, ...]}`, `<video>` (or `<image>`) in the first human turn;
- Video-ChatGPT's raw instruction file: `{"video_id", "q", "a"}`, one question and its answer;
- VTimeLLM: a conversation record with `"meta": {"duration": s, "token": {"<s0>": s, "<e0>": s}}`
  whose `<s0>`/`<e0>` placeholders become two-digit frame indices ("from <s0> to <e0>" -> "from 05 to
  37"); without a `video` field the video is named by `id`.

A video named without a file extension is looked up with the usual ones. Only the text is checked
here; a missing video is skipped (with a warning) when training reaches it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datasets import Dataset

from modeling_pite.temporal import seconds_to_frame_index

from .data_format import RecordValidator, build_dataset, read_records, resolve_media_path

__all__ = ["VIDEO_EXTENSIONS", "load_instruction_data"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
_PLACEHOLDER = re.compile(r"<[se]\d+>")


def _find_media(path: str) -> str:
    """`path` itself, or with the first extension under which the file exists (else `.mp4`)."""
    if Path(path).suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        return path
    for extension in VIDEO_EXTENSIONS:
        if Path(path + extension).is_file():
            return path + extension
    return path + VIDEO_EXTENSIONS[0]


def _conversations(record: RecordValidator) -> list[dict]:
    if "conversations" not in record.record and "q" in record.record:
        return [
            {"from": "human", "value": record.get("q", str)},
            {"from": "gpt", "value": record.get("a", str)},
        ]
    turns = record.get("conversations", list)
    if not turns:
        record.fail("conversations", "empty")
    result = []
    for i in range(len(turns)):
        speaker = record.get(f"conversations[{i}].from", str)
        role = _ROLES.get(speaker.lower())
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            record.fail(
                f"conversations[{i}].from", f"expected {expected!r} (turns alternate, human first), got {speaker!r}"
            )
        result.append({"from": role, "value": record.get(f"conversations[{i}].value", str)})
    if len(result) < 2:
        record.fail("conversations", "needs at least one human turn and one gpt answer")
    return result


def _fill_time_tokens(record: RecordValidator, turns: list[dict], num_time_bins: int) -> None:
    """Replace VTimeLLM's `<s0>`/`<e0>` placeholders by two-digit frame indices, in place."""
    tokens = record.get("meta.token", dict, required=False, default={})
    duration = record.get("meta.duration", float) if tokens else None
    if tokens and duration <= 0:
        record.fail("meta.duration", f"must be positive, got {duration}")
    indices = {
        name: f"{seconds_to_frame_index(record.get(f'meta.token.{name}', float), duration, num_time_bins):02d}"
        for name in tokens
    }
    for i, turn in enumerate(turns):
        for placeholder in _PLACEHOLDER.findall(turn["value"]):
            if placeholder not in indices:
                record.fail(f"conversations[{i}].value", f"placeholder {placeholder} has no time in meta.token")
        turn["value"] = _PLACEHOLDER.sub(lambda match: indices[match.group(0)], turn["value"])


def _records(path: str, video_folder: str | None, num_time_bins: int) -> Iterator[dict]:
    for index, raw in read_records(path):
        record = RecordValidator(
            path, index, raw, id_field="id" if isinstance(raw, dict) and "id" in raw else "video_id"
        )
        media = "image" if "image" in record.record and "video" not in record.record else "video"
        name_field = next((f for f in ("video", "image", "video_id", "id") if f in record.record), None)
        if name_field is None:
            record.fail("video", "missing (also no 'image', 'video_id' or 'id' to name the video)")
        name = str(record.get(name_field, (str, int)))
        turns = _conversations(record)
        _fill_time_tokens(record, turns, num_time_bins)
        mentions = sum(turn["value"].count("<video>") + turn["value"].count("<image>") for turn in turns)
        if mentions > 1:
            record.fail("conversations", f"one video per dialogue, found {mentions} <video>/<image> placeholders")
        for turn in turns:
            turn["value"] = turn["value"].replace("<image>", "<video>")
        if mentions == 0:
            turns[0]["value"] = f"<video>\n{turns[0]['value']}"
        yield {
            "id": str(record.get("id", (str, int), required=False, default=name)),
            "video": _find_media(resolve_media_path(name, path, video_folder)),
            "media": media,
            "conversations": turns,
            "points": [],
            "trajectories": [],
        }


def load_instruction_data(
    path: str | Path, video_folder: str | Path | None = None, num_time_bins: int = 100
) -> Dataset:
    """Read and validate a stage-3 instruction file (.json list, .jsonl or .parquet) into training records.

    Videos are relative to `video_folder`, else to the file's folder. `num_time_bins` is the number of
    frame indices VTimeLLM-style times are written with (100 in PiTe).
    """
    return build_dataset(
        _records,
        path=path,
        video_folder=None if video_folder is None else str(video_folder),
        num_time_bins=num_time_bins,
    )
