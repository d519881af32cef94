"""Evaluation by the field's protocols: VTimeLLM grounding, densevid_eval + SODA_c dense captioning,
Video-ChatGPT judged QA, and the resumable `pite evaluate` runner. See docs/evaluation.md."""

from .annotations import (
    AnnotationError,
    GroundingQuery,
    QASample,
    VideoCaptions,
    grounding_queries,
    load_activitynet_captions,
    load_charades_sta,
    load_durations,
    load_video_qa,
)
from .caption_metrics import CaptionScorer, JavaNotFoundError
from .dense_captioning import (
    DENSE_CAPTIONING_PROMPT,
    dense_captions_from_text,
    evaluate_dense_captions,
    load_densevid_submission,
    parse_dense_captions,
)
from .grounding import grounding_prompt, score_grounding
from .qa_judge import OpenAIJudge, TransformersJudge, exact_match, parse_judge_reply, score_qa
from .runner import EvalItem, PiteGenerator, run_generation, write_report

__all__ = [
    "DENSE_CAPTIONING_PROMPT",
    "AnnotationError",
    "CaptionScorer",
    "EvalItem",
    "GroundingQuery",
    "JavaNotFoundError",
    "OpenAIJudge",
    "PiteGenerator",
    "QASample",
    "TransformersJudge",
    "VideoCaptions",
    "dense_captions_from_text",
    "evaluate_dense_captions",
    "exact_match",
    "grounding_prompt",
    "grounding_queries",
    "load_activitynet_captions",
    "load_charades_sta",
    "load_densevid_submission",
    "load_durations",
    "load_video_qa",
    "parse_dense_captions",
    "parse_judge_reply",
    "run_generation",
    "score_grounding",
    "score_qa",
    "write_report",
]
