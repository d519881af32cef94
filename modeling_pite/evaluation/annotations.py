"""Readers for the benchmark annotation files the field publishes, in their original shapes.

- ActivityNet Captions (grounding and dense captioning): `{"v_xxx": {"duration": 82.73,
  "timestamps": [[0.83, 19.86], ...], "sentences": ["A young woman ...", ...]}, ...}`, seconds.
- Charades-STA: text lines `VID start end##sentence`, seconds; durations come from elsewhere (the
  Charades CSV's `length` column, a `{vid: seconds}` JSON, or the video file itself).
- Video QA as Video-ChatGPT ships MSVD-QA / MSRVTT-QA / ActivityNet-QA: a questions file
  `[{"video_name", "question", "question_id"}]` and an answers file `[{"answer", "type", "question_id"}]`.

Every reader fails with the file, the entry and the problem named, so a broken download is found at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AnnotationError",
    "GroundingQuery",
    "QASample",
    "VideoCaptions",
    "grounding_queries",
    "load_activitynet_captions",
    "load_charades_sta",
    "load_durations",
    "load_video_qa",
]


class AnnotationError(ValueError):
    """An annotation file that does not have the documented shape."""


@dataclass
class VideoCaptions:
    """One ActivityNet Captions entry: the reference events of one video, seconds."""

    video_id: str
    duration: float | None
    timestamps: list[tuple[float, float]]
    sentences: list[str]


@dataclass
class GroundingQuery:
    """One sentence to localise. `query_id` is `"{video_id}#{index}"`, index counting the video's sentences."""

    query_id: str
    video_id: str
    sentence: str
    start: float
    end: float
    duration: float | None


@dataclass
class QASample:
    question_id: str
    video_id: str
    question: str
    answer: str
    type: str | None = None


def _read_json(path: str | Path):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None


def load_activitynet_captions(path: str | Path) -> dict[str, VideoCaptions]:
    """`{video_id: VideoCaptions}` from an ActivityNet Captions file (train/val_1/val_2 shape)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object {{video_id: {{duration, timestamps, sentences}}}}")
    videos = {}
    for video_id, entry in data.items():
        where = f"{path}: video {video_id!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("timestamps", "sentences"):
            if not isinstance(entry.get(key), list):
                raise AnnotationError(f"{where}: field {key!r} is missing or not a list")
        if len(entry["timestamps"]) != len(entry["sentences"]):
            raise AnnotationError(
                f"{where}: {len(entry['timestamps'])} timestamps but {len(entry['sentences'])} sentences"
            )
        timestamps = []
        for i, span in enumerate(entry["timestamps"]):
            if not (isinstance(span, list | tuple) and len(span) == 2):
                raise AnnotationError(f"{where}: timestamps[{i}] is {span!r}, expected [start, end]")
            try:
                timestamps.append((float(span[0]), float(span[1])))
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: timestamps[{i}] is {span!r}, expected numbers") from None
        duration = entry.get("duration")
        if duration is not None:
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: duration is {duration!r}, expected a number") from None
            if duration <= 0:
                raise AnnotationError(f"{where}: duration must be positive, got {duration}")
        videos[video_id] = VideoCaptions(video_id, duration, timestamps, [str(s) for s in entry["sentences"]])
    return videos


def load_durations(path: str | Path) -> dict[str, float]:
    """Video durations in seconds from a `{vid: seconds}` JSON or a CSV with `id` and `length` columns (Charades)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"id", "length"} <= set(reader.fieldnames):
                    raise AnnotationError(f"{path}: a durations CSV needs 'id' and 'length' columns")
                return {row["id"]: float(row["length"]) for row in reader}
        except FileNotFoundError:
            raise AnnotationError(f"{path}: file not found") from None
        except ValueError as e:
            raise AnnotationError(f"{path}: bad 'length' value ({e})") from None
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object {{video_id: seconds}}")
    return {k: float(v) for k, v in data.items()}


def load_charades_sta(path: str | Path, durations: Mapping[str, float] | None = None) -> dict[str, VideoCaptions]:
    """Charades-STA lines `VID start end##sentence` grouped per video, in file order.

    Durations are not in the file: pass `durations` (see `load_durations`); videos without one get
    `duration=None`, to be filled from the video when it is decoded.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    videos: dict[str, VideoCaptions] = {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3:
            raise AnnotationError(f"{path}:{line_no}: expected 'VID start end##sentence', got {line!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise AnnotationError(f"{path}:{line_no}: start/end are not numbers in {line!r}") from None
        video_id = parts[0]
        if video_id not in videos:
            duration = durations.get(video_id) if durations is not None else None
            videos[video_id] = VideoCaptions(video_id, duration, [], [])
        videos[video_id].timestamps.append((start, end))
        videos[video_id].sentences.append(sentence.strip())
    return videos


def grounding_queries(videos: Mapping[str, VideoCaptions]) -> list[GroundingQuery]:
    """One query per reference sentence, ids `"{video_id}#{index}"` as accepted in prediction files."""
    return [
        GroundingQuery(f"{vid}#{i}", vid, sentence, span[0], span[1], captions.duration)
        for vid, captions in videos.items()
        for i, (span, sentence) in enumerate(zip(captions.timestamps, captions.sentences))
    ]


def load_video_qa(questions_path: str | Path, answers_path: str | Path) -> list[QASample]:
    """Join Video-ChatGPT-style question and answer files on `question_id` (kept as a string)."""
    questions, answers = _read_json(questions_path), _read_json(answers_path)
    for path, data in ((questions_path, questions), (answers_path, answers)):
        if not isinstance(data, list):
            raise AnnotationError(f"{path}: expected a list of objects")
    answer_by_id = {}
    for i, item in enumerate(answers):
        if not isinstance(item, dict) or "question_id" not in item or "answer" not in item:
            raise AnnotationError(f"{answers_path}: entry {i} needs 'question_id' and 'answer', got {item!r}")
        answer_by_id[str(item["question_id"])] = item
    samples = []
    for i, item in enumerate(questions):
        if not isinstance(item, dict) or not {"question_id", "question", "video_name"} <= item.keys():
            raise AnnotationError(
                f"{questions_path}: entry {i} needs 'video_name', 'question' and 'question_id', got {item!r}"
            )
        qid = str(item["question_id"])
        if qid not in answer_by_id:
            raise AnnotationError(f"{answers_path}: no answer for question_id {qid!r} (from {questions_path})")
        answer = answer_by_id[qid]
        samples.append(
            QASample(qid, str(item["video_name"]), str(item["question"]), str(answer["answer"]), answer.get("type"))
        )
    return samples
