"""Stage 1 data: Localized Narratives (JSON Lines) as word-level localization training records.

A Localized Narratives record is one annotator describing one image aloud while moving the mouse over
it: `caption`, `timed_caption` (utterances with `start_time`/`end_time` in seconds) and `traces`
(strokes of `{x, y, t}` points, normalised to the image, `t` on the same clock). As in PixelLLM, each
word of the caption gets one point, the mean of the trace points recorded while its utterance was
spoken; a word with no trace point in that span gets (-1, -1), i.e. no target. The image is a
one-frame video, and the caption is the assistant's answer to a describe-the-image request.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datasets import Dataset

from .data_format import RecordValidator, build_dataset, read_records, resolve_media_path

__all__ = ["DESCRIBE_IMAGE_PROMPTS", "load_localized_narratives", "word_points"]

DESCRIBE_IMAGE_PROMPTS = (
    "Describe the image in detail.",
    "Describe this picture and where each thing is.",
    "What do you see in the image? Describe it in detail.",
    "Give a detailed description of the image.",
)
_WORD = re.compile(r"[\w']+")


def word_points(
    caption: str, utterances: list[tuple[str, float, float]], trace: np.ndarray
) -> list[tuple[tuple[int, int], tuple[float, float]]]:
    """`(char_span, (x, y))` for each caption word covered by an utterance.

    `trace` is `[T, 3]` (x, y, t). Utterance words are matched to the caption left to right, case-
    insensitively, so punctuation and capitalisation differences between the two do not matter; a word
    that cannot be found is left without a point. Points are clipped to [0, 1] (traces can leave the
    image slightly); an utterance without trace points gives (-1, -1).
    """
    lowered = caption.lower()
    cursor = 0
    result = []
    for utterance, start, end in utterances:
        inside = trace[(trace[:, 2] >= start) & (trace[:, 2] <= end)] if len(trace) else trace
        if len(inside):
            x, y = np.clip(inside[:, :2].mean(axis=0), 0.0, 1.0).tolist()
        else:
            x, y = -1.0, -1.0
        for word in _WORD.findall(utterance.lower()):
            found = re.search(rf"(?<![\w']){re.escape(word)}(?![\w'])", lowered[cursor:])
            if found is None:
                continue
            begin = cursor + found.start()
            cursor = begin + len(word)
            result.append(((begin, cursor), (x, y)))
    return result


def _records(
    path: str,
    image_folder: str | None,
    image_template: str,
    prompts: tuple[str, ...],
) -> Iterator[dict]:
    for index, raw in read_records(path):
        record = RecordValidator(path, index, raw, id_field="image_id")
        image_id = str(record.get("image_id", (str, int)))
        caption = record.get("caption", str)
        timed = record.get("timed_caption", list)
        utterances = []
        for i in range(len(timed)):
            utterance = record.get(f"timed_caption[{i}].utterance", str)
            start = record.get(f"timed_caption[{i}].start_time", float)
            end = record.get(f"timed_caption[{i}].end_time", float)
            if end < start:
                record.fail(f"timed_caption[{i}]", f"end_time {end} is before start_time {start}")
            utterances.append((utterance, start, end))
        strokes = record.get("traces", list)
        trace = []
        for s, stroke in enumerate(strokes):
            record.check(f"traces[{s}]", stroke, list)
            for p in range(len(stroke)):
                trace.append([record.get(f"traces[{s}][{p}].{axis}", float) for axis in ("x", "y", "t")])
        trace_array = np.asarray(trace, dtype=np.float64).reshape(-1, 3)
        image = record.get("image", str, required=False) or image_template.format(image_id=image_id)
        prompt = prompts[zlib.crc32(f"{image_id}/{index}".encode()) % len(prompts)]
        yield {
            "id": f"{image_id}/{record.get('annotator_id', (str, int), required=False, default=index)}",
            "video": resolve_media_path(image, path, image_folder),
            "media": "image",
            "conversations": [{"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": caption}],
            "points": [
                {"turn": 1, "char_span": list(span), "point": list(point)}
                for span, point in word_points(caption, utterances, trace_array)
            ],
            "trajectories": [],
        }


def load_localized_narratives(
    path: str | Path,
    image_folder: str | Path | None = None,
    image_template: str = "{image_id}.jpg",
    prompts: tuple[str, ...] = DESCRIBE_IMAGE_PROMPTS,
) -> Dataset:
    """Read and validate a Localized Narratives JSONL file into stage-1 training records.

    The image of a record is its `image` field when present (the synthetic world writes one), else
    `image_template` filled with `image_id` (COCO: `"{image_id:0>12}.jpg"`), relative to
    `image_folder` or, without one, to the JSONL file's folder.
    """
    return build_dataset(
        _records,
        path=path,
        image_folder=None if image_folder is None else str(image_folder),
        image_template=image_template,
        prompts=tuple(prompts),
    )
