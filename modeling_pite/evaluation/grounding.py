"""Temporal grounding scored by the VTimeLLM protocol.

The model is asked "During which frames can we see {sentence}?" (sentence lower-cased, its final "."
dropped); the first "NN to NN" / "NN and NN" in the answer is read as 100ths of the video and compared
with the reference span divided by the duration. As in VTimeLLM's `eval.py`:

- the IoU is rounded to 2 decimals before thresholds and means are taken;
- an answer without a span is IoU 0 and stays in the denominator (`unparseable` reports their share);
- a reversed span ("from 40 to 12") is taken in written order, which makes its intersection empty: IoU 0
  (`reversed` reports their share); it is not swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..temporal import parse_frame_span
from .annotations import GroundingQuery

__all__ = ["GROUNDING_THRESHOLDS", "GroundingItem", "grounding_iou", "grounding_prompt", "score_grounding"]

GROUNDING_THRESHOLDS = (0.3, 0.5, 0.7)
_PROMPT = "During which frames can we see {}?"


def grounding_prompt(sentence: str) -> str:
    """The VTimeLLM grounding question for one reference sentence."""
    sentence = sentence.strip().lower()
    if sentence.endswith("."):
        sentence = sentence[:-1]
    return _PROMPT.format(sentence)


def grounding_iou(span: tuple[float, float], reference: tuple[float, float]) -> float:
    """IoU of two spans in written order, rounded to 2 decimals (VTimeLLM's `iou`); a reversed span gets 0."""
    (s, e), (gs, ge) = span, reference
    intersection = max(0.0, min(e, ge) - max(s, gs))
    union = max(e, ge) - min(s, gs)
    return round(intersection / union, 2) if union > 0 else 0.0


@dataclass
class GroundingItem:
    """The per-query record kept next to the report: what was parsed and the IoU it got."""

    query_id: str
    span: tuple[int, int] | None
    iou: float
    missing: bool = False


def score_grounding(
    predictions: Mapping[str, str], queries: Sequence[GroundingQuery], num_frames: int = 100
) -> tuple[dict[str, float | int], list[GroundingItem]]:
    """R1@0.3/0.5/0.7 and mIoU (x100) over all `queries`; queries absent from `predictions` count as unparseable.

    Returns the flat report (`miou`, `r1@0.3`, `r1@0.5`, `r1@0.7`, `unparseable`, `reversed` as percentages,
    `num_queries`, `missing`) and the per-query items.
    """
    if not queries:
        raise ValueError("no grounding queries to score")
    items = []
    for query in queries:
        if query.duration is None or query.duration <= 0:
            raise ValueError(f"query {query.query_id!r} has no positive duration; pass the videos' durations")
        text = predictions.get(query.query_id)
        span = parse_frame_span(text) if text is not None else None
        if span is None:
            iou = 0.0
        else:
            reference = (query.start / query.duration, query.end / query.duration)
            iou = grounding_iou((span[0] / num_frames, span[1] / num_frames), reference)
        items.append(GroundingItem(query.query_id, span, iou, missing=text is None))
    n = len(items)
    report: dict[str, float | int] = {"miou": 100 * sum(item.iou for item in items) / n}
    for threshold in GROUNDING_THRESHOLDS:
        report[f"r1@{threshold}"] = 100 * sum(item.iou >= threshold for item in items) / n
    report["unparseable"] = 100 * sum(item.span is None for item in items) / n
    report["reversed"] = 100 * sum(item.span is not None and item.span[0] > item.span[1] for item in items) / n
    report["num_queries"] = n
    report["missing"] = sum(item.missing for item in items)
    return report, items
