"""Pipelines on a PiTe model: `"video-qa"`, `"video-temporal-grounding"` and `"video-dense-captioning"`.

Importing `modeling_pite` registers them, so `pipeline("video-qa", model=path)` works on a saved PiTe
checkpoint; `hub.save_for_hub` also writes them into the checkpoint's `custom_pipelines` for
`trust_remote_code` users.

A video is a path, a binary file object or a `[T, H, W, 3]` uint8 frame array; it is sampled to the model's
`num_frames` frames uniformly over its whole length. Time in answers is a two-digit sampled-frame index;
the grounding and dense-captioning pipelines turn it into seconds.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .temporal import frame_span_to_seconds, parse_frame_span
from .video_io import VideoDecodeError, sample_frame_indices, sample_video

__all__ = [
    "PIPELINE_CLASSES",
    "VideoDenseCaptioningPipeline",
    "VideoQuestionAnsweringPipeline",
    "VideoTemporalGroundingPipeline",
    "register_pipelines",
]

_VIDEO_KEYS = ("video", "question", "messages", "fps")


@dataclass
class _SampledVideo:
    frames: np.ndarray  # [N, H, W, 3] uint8
    timestamps: list[float] | None  # seconds of each sampled frame
    duration: float | None
    name: str | None


def load_video(video: Any, num_frames: int, fps: float | None = None) -> _SampledVideo:
    """Sample `num_frames` frames of a path, a binary file object or a `[T, H, W, 3]` array.

    Arrays carry no clock: pass `fps` to get timestamps and a duration (needed for seconds).
    """
    if isinstance(video, (str, os.PathLike)):
        frames, metadata = sample_video(video, num_frames)
        return _SampledVideo(frames, metadata.timestamps, metadata.duration, str(video))
    if hasattr(video, "read"):
        name = getattr(video, "name", None)
        suffix = Path(name).suffix if isinstance(name, str) else ".mp4"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"video{suffix}"
            path.write_bytes(video.read())
            try:
                frames, metadata = sample_video(path, num_frames)
            except VideoDecodeError as error:
                raise VideoDecodeError(name or "<file object>", error.cause) from error
        return _SampledVideo(frames, metadata.timestamps, metadata.duration, name)
    if isinstance(video, (np.ndarray, torch.Tensor)):
        frames = np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(
                f"a video array must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}"
            )
        indices = sample_frame_indices(len(frames), num_frames)
        if fps is None:
            return _SampledVideo(frames[indices], None, None, None)
        return _SampledVideo(frames[indices], [float(i / fps) for i in indices], len(frames) / fps, None)
    raise TypeError(
        f"a video must be a path, a binary file object or a [T, H, W, 3] array, got {type(video).__name__}"
    )


def _chat(question: str | Sequence[dict] | None) -> list[dict]:
    """A question, or a chat whose first user turn gets the video, as messages with one video block."""
    if question is None or (isinstance(question, str) and not question.strip()):
        raise ValueError("the question is empty: pass `question=` (a string or a list of chat messages)")
    if isinstance(question, str):
        return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question.strip()}]}]
    messages = [dict(message) for message in question]
    if not messages or not any(m.get("role") == "user" for m in messages):
        raise ValueError("the chat has no user message")
    has_video = any(
        isinstance(m["content"], list) and any(block.get("type") == "video" for block in m["content"])
        for m in messages
    )
    if not has_video:
        first_user = next(m for m in messages if m["role"] == "user")
        content = first_user["content"]
        text_blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        first_user["content"] = [{"type": "video"}, *text_blocks]
    return messages


class VideoQuestionAnsweringPipeline(Pipeline):
    """Answer a question (or continue a chat) about a video; optionally return noun-phrase trajectories.

    ```python
    qa = pipeline("video-qa", model="pite-7b")
    qa("video.mp4", question="What is the man holding?", return_trajectories=True, max_new_tokens=64)
    # {"answer": "...", "video": "video.mp4",
    #  "trajectories": [{"phrase": "a red ball", "char_span": (10, 20),
    #                    "trajectory": array [P, N, 2], "timestamps": [N seconds]}]}
    ```

    `videos` may be one video or a list (batched with `batch_size=`); `question` may also be given per video
    as `{"video": ..., "question": ...}` dicts. The trajectory of a phrase is the trajectory head read at the
    phrase's answer tokens (from the hidden state that generated each token, as in training), averaged.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # generation needs left padding in batches; the tokenizer is the processor's
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is not None:
            self._generation_defaults["pad_token_id"] = self.tokenizer.pad_token_id
        self.phrase_extractor = _phrase_extractor()

    def _sanitize_parameters(
        self, question=None, fps=None, return_trajectories=None, max_new_tokens=None, generate_kwargs=None, **kwargs
    ):
        preprocess_params, forward_params, postprocess_params = {}, dict(generate_kwargs or {}), {}
        if fps is not None:
            preprocess_params["fps"] = fps
        if max_new_tokens is not None:
            forward_params["max_new_tokens"] = max_new_tokens
        forward_params.update(kwargs)  # any other generation kwarg (do_sample, num_beams, ...)
        if return_trajectories is not None:
            forward_params["return_trajectories"] = return_trajectories
            postprocess_params["return_trajectories"] = return_trajectories
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, videos: Any, question: str | Sequence[dict] | None = None, **kwargs):
        """`videos`: a video, a `{"video", "question"}` dict, or a list of either."""
        single = not isinstance(videos, list)
        items = [self._as_item(video, question) for video in ([videos] if single else videos)]
        outputs = super().__call__(items if not single else items[0], **kwargs)
        return outputs

    def _as_item(self, video: Any, question: Any) -> dict:
        if isinstance(video, dict):
            unknown = set(video) - set(_VIDEO_KEYS)
            if unknown or "video" not in video:
                raise ValueError(f"an input dict needs a 'video' key and may have {_VIDEO_KEYS}, got {sorted(video)}")
            item = dict(video)
            item.setdefault("question", question)
            return item
        return {"video": video, "question": question}

    def _question(self, item: dict) -> Any:
        return item.get("messages") or item.get("question")

    def preprocess(self, item: dict, fps: float | None = None) -> dict:
        num_frames = self.model.config.num_frames
        messages = _chat(self._question(item))
        video = load_video(item["video"], num_frames, item.get("fps", fps))
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[prompt], videos=[video.frames], return_tensors="pt")
        inputs = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype or torch.float32)
        inputs.update(timestamps=video.timestamps, duration=video.duration, video=video.name)
        return inputs

    def _forward(self, model_inputs: dict, return_trajectories: bool = False, **generate_kwargs) -> dict:
        meta = {key: model_inputs.pop(key) for key in ("timestamps", "duration", "video")}
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        prompt_ids = model_inputs["input_ids"]
        sequences = self.model.generate(**model_inputs, **generate_kwargs)
        new_tokens = sequences[:, prompt_ids.shape[1] :]
        output = {"generated_ids": new_tokens, **meta}
        if return_trajectories:
            output["token_trajectories"] = self._token_trajectories(model_inputs, sequences, prompt_ids.shape[1])
        return output

    def _token_trajectories(self, model_inputs: dict, sequences: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """`[B, T_new, P, N, 2]`: for every generated token, the trajectory the model regressed for it.

        One forward over prompt + answer: position `i - 1` holds the coordinates of token `i` (the shift used
        in training), so the answer's tokens read positions `prompt_length - 1 ...`.
        """
        attention_mask = model_inputs["attention_mask"]
        new_mask = torch.ones_like(sequences[:, prompt_length:], dtype=attention_mask.dtype)
        attention_mask = torch.cat([attention_mask, new_mask], dim=1)
        outputs = self.model(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),  # as generate() numbers left-padded rows
            pixel_values_videos=model_inputs["pixel_values_videos"],
            use_cache=False,
        )
        return outputs.trajectories[:, prompt_length - 1 : -1].float()

    def postprocess(self, model_outputs: dict, return_trajectories: bool = False) -> dict:
        token_ids = model_outputs["generated_ids"][0].tolist()
        token_ids = _cut_at_eos(token_ids, self.model.generation_config.eos_token_id)
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        answer = text.strip()
        result = {"answer": answer, "video": model_outputs["video"]}
        if return_trajectories:
            result["trajectories"] = self._phrase_trajectories(
                token_ids, text, model_outputs["token_trajectories"][0], model_outputs["timestamps"]
            )
        return result

    def _phrase_trajectories(self, token_ids, text, trajectories, timestamps) -> list[dict]:
        """Each noun phrase of the answer with the mean trajectory of the tokens that overlap it."""
        token_spans = _token_char_spans(self.tokenizer, token_ids)
        answer = text.strip()
        offset = len(text) - len(text.lstrip())
        phrases = []
        for begin, end, phrase in _noun_phrases(self.phrase_extractor, answer):
            tokens = [i for i, (b, e) in enumerate(token_spans) if b < end + offset and e > begin + offset]
            if not tokens:
                continue
            trajectory = trajectories[tokens].mean(dim=0).numpy()
            phrases.append(
                {"phrase": phrase, "char_span": (begin, end), "trajectory": trajectory, "timestamps": timestamps}
            )
        return phrases


class VideoTemporalGroundingPipeline(VideoQuestionAnsweringPipeline):
    """When does something happen? `query` -> `{"start": s, "end": e}` in seconds (None if unparseable).

    The question is VTimeLLM's "During which frames can we see {query}?", the answer's first "NN to NN" is
    read as sampled-frame indices and converted with `frame_span_to_seconds`.
    """

    def __call__(self, videos: Any, query: str | None = None, **kwargs):
        if isinstance(videos, list):
            videos = [self._as_query_item(video, query) for video in videos]
        else:
            videos = self._as_query_item(videos, query)
        return super().__call__(videos, **kwargs)

    @staticmethod
    def _as_query_item(video: Any, query: str | None) -> dict:
        item = dict(video) if isinstance(video, dict) else {"video": video}
        query = item.pop("query", query)
        if query is None or not str(query).strip():
            raise ValueError("the grounding query is empty: pass `query=` (a sentence describing the moment)")
        item["question"] = _protocol("grounding").grounding_prompt(str(query))
        item["query"] = str(query).strip()
        return item

    def _as_item(self, video: Any, question: Any) -> dict:
        return video

    def preprocess(self, item: dict, fps: float | None = None) -> dict:
        query = item.pop("query")
        inputs = super().preprocess(item, fps)
        if inputs["duration"] is None:
            raise ValueError("grounding a frame array needs its frame rate: pass `fps=` to get seconds")
        inputs["query"] = query
        return inputs

    def _forward(self, model_inputs: dict, **kwargs) -> dict:
        query = model_inputs.pop("query")
        return {**super()._forward(model_inputs, **kwargs), "query": query}

    def postprocess(self, model_outputs: dict, return_trajectories: bool = False) -> dict:
        result = super().postprocess(model_outputs, return_trajectories)
        num_frames = self.model.config.num_frames
        span = parse_frame_span(result["answer"])
        start = end = None
        if span is not None:
            span = tuple(min(index, num_frames - 1) for index in span)
            start, end = frame_span_to_seconds(*span, model_outputs["duration"], num_frames)
        return {"query": model_outputs["query"], **result, "frame_span": span, "start": start, "end": end}


class VideoDenseCaptioningPipeline(VideoQuestionAnsweringPipeline):
    """Every event of a video with its time: `{"events": [{"caption", "start", "end", "frame_span"}]}`."""

    def __call__(self, videos: Any, **kwargs):
        return super().__call__(videos, question=_protocol("dense_captioning").DENSE_CAPTIONING_PROMPT, **kwargs)

    def preprocess(self, item: dict, fps: float | None = None) -> dict:
        inputs = super().preprocess(item, fps)
        if inputs["duration"] is None:
            raise ValueError("dense captioning of a frame array needs its frame rate: pass `fps=` to get seconds")
        return inputs

    def postprocess(self, model_outputs: dict, return_trajectories: bool = False) -> dict:
        result = super().postprocess(model_outputs, return_trajectories)
        num_frames, duration = self.model.config.num_frames, model_outputs["duration"]
        events = []
        for start_index, end_index, caption in _protocol("dense_captioning").parse_dense_captions(result["answer"]):
            span = (min(start_index, num_frames - 1), min(end_index, num_frames - 1))
            start, end = frame_span_to_seconds(*span, duration, num_frames)
            events.append({"caption": caption, "start": start, "end": end, "frame_span": span})
        return {**result, "events": events}


def _protocol(name: str):
    """The evaluation protocol (prompt, parser) a task shares with `pite evaluate`.

    Imported by name: this file is also shipped as a checkpoint's remote code, which holds flat modules
    only, so there the grounding and dense-captioning tasks need the installed package.
    """
    try:
        return importlib.import_module(f"modeling_pite.evaluation.{name}")
    except ImportError as error:
        raise ImportError(f"this task needs the `pite` package (modeling_pite.evaluation.{name}): {error}") from error


def _cut_at_eos(token_ids: list[int], eos_token_id: int | list[int] | None) -> list[int]:
    eos_ids = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    for index, token in enumerate(token_ids):
        if token in eos_ids:
            return token_ids[:index]
    return token_ids


def _token_char_spans(tokenizer, token_ids: list[int]) -> list[tuple[int, int]]:
    """Each token's character span in the decoded text, from decoding growing prefixes.

    Decoding prefixes (rather than tokens one by one) keeps the tokenizer's joining rules (leading spaces,
    byte fallback) exactly as in the full decode.
    """
    prefix_texts = tokenizer.batch_decode([token_ids[:count] for count in range(1, len(token_ids) + 1)],
                                          skip_special_tokens=True)  # fmt: skip
    ends = [len(text) for text in prefix_texts]
    return list(zip([0, *ends[:-1]], ends))


def _phrase_extractor():
    """The annotation package's rule-based chunker; None when only the checkpoint's remote code is installed."""
    try:
        from processing.annotation.phrases import RuleBasedPhraseExtractor
    except ImportError:
        return None
    return RuleBasedPhraseExtractor()


def _noun_phrases(extractor, text: str) -> list[tuple[int, int, str]]:
    """(begin, end, text) of the noun phrases of `text`."""
    if extractor is not None:
        return [(p.char_span[0], p.char_span[1], p.text) for p in extractor(text)]
    return _minimal_noun_phrases(text)


def _minimal_noun_phrases(text: str) -> list[tuple[int, int, str]]:
    """Fallback without the annotation package: a determiner and up to three words, cut at function words."""
    return [(m.start(), m.end(), m.group(0)) for m in _MINIMAL_PHRASE.finditer(text)]


_FUNCTION_WORDS = r"(?:is|are|was|were|be|has|have|and|or|but|to|of|in|on|at|from|with|by|into|near|then|while)\b"
_MINIMAL_PHRASE = re.compile(
    rf"\b(?:a|an|the|this|that|his|her|its|their)(?:\s+(?!{_FUNCTION_WORDS})[A-Za-z]+){{1,3}}", re.IGNORECASE
)


PIPELINE_CLASSES = {
    "video-qa": VideoQuestionAnsweringPipeline,
    "video-temporal-grounding": VideoTemporalGroundingPipeline,
    "video-dense-captioning": VideoDenseCaptioningPipeline,
}


def register_pipelines() -> None:
    """Register the three tasks with transformers' `pipeline()` (done on `import modeling_pite`)."""
    for task, pipeline_class in PIPELINE_CLASSES.items():
        PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=pipeline_class, pt_model=AutoModelForImageTextToText, type="multimodal"
        )
