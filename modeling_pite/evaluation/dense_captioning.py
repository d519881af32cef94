"""Dense video captioning scored by the ActivityNet protocol (densevid_eval) plus SODA_c.

For each tIoU threshold in {0.3, 0.5, 0.7, 0.9} and each video, every predicted event is paired with
every reference event whose tIoU with it is >= the threshold; a prediction that overlaps none is paired
with a random lower-case string, so it scores (almost surely) 0, exactly as densevid_eval does. The
pairs are PTB-tokenised, METEOR 1.5 (the jar's aggregate over the video's pairs) and CIDEr are computed
per video, averaged over *all* reference videos (a video with no prediction scores 0), then over the
thresholds. Scores are reported x100. SODA_c comes from `soda.py` on the same tokens and the same JVM.

The model answers the VTimeLLM captioning prompt with a JSON list of
`{"event": ..., "timestamps": "from xx to xx"}`; `dense_captions_from_text` reads that tolerantly, merges
adjacent near-duplicate events (VTimeLLM's `merge_similar_sentences`) and converts frame indices to
seconds with `frame_span_to_seconds`.
"""

from __future__ import annotations

import ast
import difflib
import json
import random
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..temporal import frame_span_to_seconds, parse_events, parse_frame_span
from .annotations import AnnotationError, VideoCaptions
from .soda import soda_f_measure

__all__ = [
    "DENSE_CAPTIONING_PROMPT",
    "DENSE_CAPTIONING_TIOUS",
    "dense_captions_from_text",
    "evaluate_dense_captions",
    "load_densevid_submission",
    "merge_similar_events",
    "parse_dense_captions",
    "segment_tiou",
]

DENSE_CAPTIONING_TIOUS = (0.3, 0.5, 0.7, 0.9)
DENSE_CAPTIONING_PROMPT = (
    "Could you please describe the events in the video in detail? Be specific about the activities of "
    "individuals, their surroundings, and interactions with others. The output should be in JSON format, "
    'structured as follows: {"event": "xx", "timestamps": "from xx to xx"}.'
)
_OBJECT = re.compile(r"\{[^{}]*\}")


def _literal(text: str):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _event_from_item(item) -> tuple[int, int, str] | None:
    if not isinstance(item, dict):
        return None
    sentence = next((item[k] for k in ("event", "sentence", "caption") if k in item), None)
    stamps = next((item[k] for k in ("timestamps", "timestamp") if k in item), None)
    if sentence is None or stamps is None:
        return None
    if isinstance(stamps, list | tuple) and len(stamps) == 2 and all(isinstance(x, int | float) for x in stamps):
        span = (int(stamps[0]), int(stamps[1]))
    else:
        span = parse_frame_span(str(stamps))
    return None if span is None else (span[0], span[1], str(sentence).strip())


def parse_dense_captions(text: str) -> list[tuple[int, int, str]]:
    """(start_frame, end_frame, sentence) events from a model answer, in written order.

    Reads the JSON list VTimeLLM's prompt asks for; when the list does not parse as a whole (cut off by
    `max_new_tokens`, single quotes, prose around it) every `{...}` object that parses is kept; an answer
    with no objects at all is read as prose ("From 00 to 12, a man ...").
    """
    start, end = text.find("["), text.rfind("]")
    whole = _literal(text[start : end + 1]) if 0 <= start < end else None
    items = whole if isinstance(whole, list) else [_literal(m.group()) for m in _OBJECT.finditer(text)]
    events = [event for item in items if (event := _event_from_item(item)) is not None]
    if not events and not items:
        events = parse_events(text)
    return events


def merge_similar_events(events: Sequence[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Merge runs of adjacent events with near-identical sentences (difflib ratio > 0.98) whose spans touch.

    VTimeLLM's rule, on frame indices: the next event joins the current one when its start is within one
    frame of the current end; the merged span runs from the first start to the last end.
    """
    merged: list[tuple[int, int, str]] = []
    for start, end, sentence in events:
        if merged:
            cur_start, cur_end, cur_sentence = merged[-1]
            similar = difflib.SequenceMatcher(None, cur_sentence, sentence).ratio() > 0.98
            if similar and -1 <= start - cur_end <= 1:
                merged[-1] = (cur_start, end, cur_sentence)
                continue
        merged.append((start, end, sentence))
    return merged


def dense_captions_from_text(text: str, duration: float, num_frames: int = 100) -> list[dict]:
    """A model answer as densevid_eval submission entries `[{"sentence", "timestamp": [s, e]}]`, seconds."""
    return [
        {"sentence": sentence, "timestamp": list(frame_span_to_seconds(s, e, duration, num_frames))}
        for s, e, sentence in merge_similar_events(parse_dense_captions(text))
    ]


def segment_tiou(a: Sequence[float], b: Sequence[float]) -> float:
    """densevid_eval's (and SODA's) tIoU: the union is capped by the summed lengths, + 1e-8 in the denominator."""
    intersection = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), (a[1] - a[0]) + (b[1] - b[0]))
    return intersection / (union + 1e-8)


def load_densevid_submission(path: str | Path) -> dict[str, list[dict]]:
    """The `results` of a densevid_eval submission `{"results": {vid: [{"sentence", "timestamp": [s, e]}]}}`."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise AnnotationError(f"{path}: a densevid_eval submission needs a 'results' object {{video_id: [events]}}")
    for vid, events in data["results"].items():
        if not isinstance(events, list):
            raise AnnotationError(f"{path}: results[{vid!r}] is not a list")
        for i, event in enumerate(events):
            stamp = event.get("timestamp") if isinstance(event, dict) else None
            if not (isinstance(stamp, list) and len(stamp) == 2 and isinstance(event.get("sentence"), str)):
                raise AnnotationError(f"{path}: results[{vid!r}][{i}] needs 'sentence' and 'timestamp': [s, e]")
    return data["results"]


def _garbage(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))


def evaluate_dense_captions(
    predictions: Mapping[str, Sequence[Mapping]],
    references: Mapping[str, VideoCaptions],
    *,
    scorer,
    tious: Sequence[float] = DENSE_CAPTIONING_TIOUS,
    max_proposals: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, float | int], dict[str, dict[str, float]]]:
    """Score densevid-format `predictions` against `references` with a `CaptionScorer` (or a stand-in).

    Returns the flat report (`meteor`, `cider`, `soda_c`, `meteor@0.3`, ..., x100; `num_videos`,
    `missing_videos`, `empty_videos`, `extra_videos`) and per-video scores (0..1).
    """
    if not references:
        raise ValueError("no reference videos to score against")
    videos = list(references)
    events = {vid: list(predictions.get(vid) or [])[:max_proposals] for vid in videos}
    unique = sorted(
        {e["sentence"] for evs in events.values() for e in evs} | {s for r in references.values() for s in r.sentences}
    )
    tokens = dict(zip(unique, scorer.tokenize(unique)))
    rng = random.Random(seed)

    per_video: dict[str, dict[str, float]] = {}
    for vid in tqdm(videos, desc="dense captioning", disable=not progress):
        ref, preds = references[vid], events[vid]
        row: dict[str, float] = {}
        for tiou in tious:
            hyps, refs = [], []
            for pred in preds:
                matched = [
                    tokens[sentence]
                    for span, sentence in zip(ref.timestamps, ref.sentences)
                    if segment_tiou(pred["timestamp"], span) >= tiou
                ]
                for ref_tokens in matched or [_garbage(rng)]:
                    hyps.append(tokens[pred["sentence"]])
                    refs.append([ref_tokens])
            row[f"meteor@{tiou}"] = scorer.meteor(hyps, refs)[0] if hyps else 0.0
            row[f"cider@{tiou}"] = scorer.cider(hyps, refs) if hyps else 0.0
        row["soda_c"] = _soda_c(preds, ref, tokens, scorer)
        per_video[vid] = row

    report: dict[str, float | int] = {}
    for metric in ("meteor", "cider"):
        by_tiou = [float(np.mean([row[f"{metric}@{t}"] for row in per_video.values()])) for t in tious]
        report[metric] = 100 * float(np.mean(by_tiou))
        report.update({f"{metric}@{t}": 100 * value for t, value in zip(tious, by_tiou)})
    report["soda_c"] = 100 * float(np.mean([row["soda_c"] for row in per_video.values()]))
    report["num_videos"] = len(videos)
    report["missing_videos"] = sum(vid not in predictions for vid in videos)
    report["empty_videos"] = sum(vid in predictions and not events[vid] for vid in videos)
    report["extra_videos"] = len(set(predictions) - set(references))
    return report, per_video


def _soda_c(preds: Sequence[Mapping], ref: VideoCaptions, tokens: Mapping[str, str], scorer) -> float:
    """One video's SODA_c F-measure (0 when it has no predictions)."""
    if not preds or not ref.sentences:
        return 0.0
    preds = sorted(preds, key=lambda p: p["timestamp"][0])
    gold = sorted(zip(ref.timestamps, ref.sentences), key=lambda g: g[0][0])
    iou = np.array([[segment_tiou(p["timestamp"], span) for p in preds] for span, _ in gold])
    # fujiso/SODA scores the reference as METEOR's hypothesis against the prediction as its reference
    hyps = [tokens[sentence] for _, sentence in gold for _ in preds]
    refs = [[tokens[p["sentence"]]] for _ in gold for p in preds]
    meteor = np.array(scorer.meteor(hyps, refs)[1]).reshape(len(gold), len(preds))
    return soda_f_measure(iou, meteor)[2]
