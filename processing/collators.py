"""Batches of training records (`processing.data_format`) -> PiTe model inputs, for all three stages.

Each record's dialogue is rendered with the processor's chat template and tokenized by `PiteProcessor`
(which expands `<video>` to one token per frame and encodes the frames, or passes cached CLIP
features through). From the character offsets of the tokens the collator derives

- `labels`: the token id on the assistant's tokens (the template's generation blocks), -100 elsewhere;
- `localization_targets` `[B, L, 2]` (stage 1) or `trajectory_targets` `[B, L, P, N, 2]` (stage 2):
  the coordinates of a grounded word/phrase on every token that overlaps its characters, -1 elsewhere.

Targets are token-aligned exactly like `labels`; the model shifts both. A video that cannot be read
(missing, corrupt, absent from the feature cache) drops its record from the batch with a warning; the
count travels in the batch as `num_skipped_videos` so the trainer can log it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from transformers.utils.chat_template_utils import render_jinja_template

from modeling_pite.video_io import VideoDecodeError

__all__ = ["PiteDataCollator", "add_length_column", "char_spans_to_token_mask", "render_dialogue"]

logger = logging.getLogger(__name__)

_ROLES = {"human": "user", "gpt": "assistant"}


def render_dialogue(processor, turns: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """A record's `conversations` in the processor's chat template: the text and its assistant (trained)
    character spans."""
    messages = [{"role": _ROLES[turn["from"]], "content": turn["value"]} for turn in turns]
    (text,), (generation_spans,) = render_jinja_template(
        conversations=[messages],
        chat_template=processor.chat_template,
        return_assistant_tokens_mask=True,
        **processor.tokenizer.special_tokens_map,
    )
    return text, generation_spans


def add_length_column(dataset, processor, column: str = "length"):
    """Add each record's token count (its rendered dialogue, a video counted as one token per frame) as
    `column`: what `train_sampling_strategy="group_by_length"` sorts by, so that a batch of short QA records
    is not padded to a long dense caption's length."""
    tokenizer, num_frames = processor.tokenizer, processor.video_processor.num_frames
    video_token_id = tokenizer.convert_tokens_to_ids(tokenizer.video_token)

    def lengths(batch: dict[str, list]) -> dict[str, list[int]]:
        texts = [render_dialogue(processor, turns)[0] for turns in batch["conversations"]]
        counts = []
        for ids, media in zip(tokenizer(texts)["input_ids"], batch["media"]):
            videos = ids.count(video_token_id)
            counts.append(len(ids) + (videos * (num_frames - 1) if media == "video" else 0))
        return {column: counts}

    return dataset.map(lengths, batched=True, desc="token lengths")


def char_spans_to_token_mask(
    offsets: torch.Tensor, spans: Sequence[tuple[int, int]], replacements: Sequence[dict] = ()
) -> torch.Tensor:
    """Boolean `[L]` mask of the tokens overlapping any character span of the *unexpanded* text.

    `offsets` are the tokenizer's `[L, 2]` offsets into the text after the processor expanded each
    `<video>` (described by `replacements`, the processor's `text_replacement_offsets`); spans are
    shifted past the placeholders that precede them. Zero-width tokens (added `<s>`) never match.
    """
    ends = [r["span"][1] for r in replacements]
    gained = [0] + [r["new_span"][1] - r["span"][1] for r in replacements]  # cumulative: new spans are expanded
    mask = torch.zeros(len(offsets), dtype=torch.bool)
    starts, stops = offsets[:, 0], offsets[:, 1]
    for begin, end in spans:
        begin += gained[bisect.bisect_right(ends, begin)]
        end += gained[bisect.bisect_right(ends, end)]
        mask |= (starts < end) & (stops > begin)
    return mask


@dataclass
class _Example:
    input_ids: torch.Tensor  # [L]
    labels: torch.Tensor  # [L]
    coordinates: torch.Tensor | None  # [L, 2] or [L, P, N, 2]
    visual: torch.Tensor  # [F, 3, H, W] pixels or [F, D] features
    video: str


@dataclass
class PiteDataCollator:
    r"""Collate training records into `PiteForConditionalGeneration` inputs.

    Args:
        processor ([`PiteProcessor`]): tokenizer + video processor + chat template.
        coordinate_targets (`"localization"`, `"trajectory"` or `None`): which coordinate targets the
            stage trains (1: localization, 2: trajectory, 3: none). Given for every batch, so a batch without
            grounded words still yields (all -1) targets and the loss has the same terms on every process.
        num_trajectory_points (`int`): P, the shape of empty trajectory targets.
        feature_store: optional cache of CLIP features, a mapping video id -> `[F, D]` tensor such as
            `modeling_pite.feature_extraction.VideoFeatureStore`; when given, videos are never decoded and a
            video without cached features is skipped. A video's id is its path relative to `video_root`
            without the suffix (how `pite extract-features` names a folder's videos), else its file stem.
        video_root (`str`, *optional*): the folder the feature cache was extracted from.
        max_length (`int`, *optional*): truncate longer sequences (never inside the video tokens: such a
            record is skipped).
    """

    processor: Any
    coordinate_targets: Literal["localization", "trajectory"] | None = None
    num_trajectory_points: int = 3
    feature_store: Mapping[str, torch.Tensor] | None = None
    video_root: str | None = None
    max_length: int | None = None
    num_skipped: int = field(default=0, init=False)

    def __post_init__(self):
        if self.coordinate_targets not in (None, "localization", "trajectory"):
            raise ValueError(
                f"coordinate_targets must be 'localization', 'trajectory' or None, got {self.coordinate_targets!r}"
            )
        self._last_good: _Example | None = None

    @property
    def num_frames(self) -> int:
        return self.processor.video_processor.num_frames

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        examples, skipped = [], 0
        still_videos = len({record["media"] for record in records}) > 1  # images among videos: show them as stills
        for record in records:
            try:
                examples.append(self._example(record, still_videos))
            except (VideoDecodeError, OSError, _SkipRecord) as error:
                skipped += 1
                self.num_skipped += 1
                logger.warning(
                    "Skipping %s (record %r): %s [%d skipped so far]",
                    record["video"],
                    record["id"],
                    error,
                    self.num_skipped,
                )
        if not examples:
            if self._last_good is None:
                raise RuntimeError(
                    f"None of the {len(records)} records of the batch could be loaded (see the warnings above)."
                )
            logger.warning("No record of this batch could be loaded; repeating the last good record to keep the step.")
            examples = [self._last_good]
        self._last_good = examples[-1]
        batch = self._pad(examples)
        batch["num_skipped_videos"] = torch.tensor(skipped)
        return batch

    # one record

    def _example(self, record: dict, still_video: bool = False) -> _Example:
        turns = record["conversations"]
        text, generation_spans = render_dialogue(self.processor, turns)
        turn_starts, cursor = [], 0
        for turn in turns:  # where each turn's text landed in the rendered dialogue
            cursor = text.index(turn["value"], cursor)
            turn_starts.append(cursor)

        visual = self._visual(record, still_video)
        visual_kwargs = {"video_features": [visual]} if self.feature_store is not None else {"videos": [visual]}
        inputs = self.processor(
            text=[text], return_offsets_mapping=True, return_text_replacement_offsets=True, **visual_kwargs
        )
        input_ids, offsets = inputs["input_ids"][0], inputs["offset_mapping"][0]
        replacements = inputs["text_replacement_offsets"][0]
        visual = inputs["video_features" if self.feature_store is not None else "pixel_values_videos"][0]

        assistant = char_spans_to_token_mask(offsets, generation_spans, replacements)
        labels = torch.where(assistant, input_ids, torch.full_like(input_ids, -100))
        coordinates = None
        if self.coordinate_targets == "localization":
            coordinates = torch.full((len(input_ids), 2), -1.0)
            for item in record["points"]:
                span = _turn_span(item, turn_starts)
                coordinates[char_spans_to_token_mask(offsets, [span], replacements)] = torch.tensor(item["point"])
        elif self.coordinate_targets == "trajectory":
            coordinates = torch.full((len(input_ids), self.num_trajectory_points, self.num_frames, 2), -1.0)
            for item in record["trajectories"]:
                trajectory = torch.tensor(item["trajectory"], dtype=torch.float32)
                if trajectory.shape != coordinates.shape[1:]:
                    raise _SkipRecord(
                        f"trajectory of shape {list(trajectory.shape)}, the model needs {list(coordinates.shape[1:])}"
                    )
                span = _turn_span(item, turn_starts)
                coordinates[char_spans_to_token_mask(offsets, [span], replacements)] = trajectory

        if self.max_length is not None and len(input_ids) > self.max_length:
            video_token_positions = (input_ids == self.processor.video_token_id).nonzero()
            if len(video_token_positions) and video_token_positions.max() >= self.max_length:
                raise _SkipRecord(
                    f"{len(input_ids)} tokens, and max_length={self.max_length} would cut the video tokens"
                )
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            coordinates = None if coordinates is None else coordinates[: self.max_length]
        return _Example(input_ids, labels, coordinates, visual, record["video"])

    def _visual(self, record: dict, still_video: bool) -> torch.Tensor | np.ndarray | str:
        """Cached features `[F, D]`, an image `[H, W, 3]` (a one-frame video) or the video's path.

        With `still_video` an image is repeated to `num_frames` frames, so it can share a batch with videos.
        """
        path, is_image = record["video"], record["media"] == "image"
        if self.feature_store is not None:
            key = next((key for key in _feature_keys(path, self.video_root) if key in self.feature_store), None)
            if key is None:
                raise _SkipRecord("no cached features for this video")
            features = self.feature_store[key]
            return features.expand(self.num_frames, -1) if is_image and still_video else features
        if not is_image:
            return path
        with Image.open(path) as image:
            frame = np.asarray(image.convert("RGB"))
        return np.repeat(frame[None], self.num_frames, axis=0) if still_video else frame

    # the batch

    def _pad(self, examples: list[_Example]) -> dict[str, torch.Tensor]:
        length = max(len(e.input_ids) for e in examples)
        pad_id = self.processor.tokenizer.pad_token_id
        batch_size = len(examples)
        input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        labels = torch.full((batch_size, length), -100, dtype=torch.long)
        for i, example in enumerate(examples):
            n = len(example.input_ids)
            input_ids[i, :n], attention_mask[i, :n], labels[i, :n] = example.input_ids, 1, example.labels
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.coordinate_targets is not None:
            shape = examples[0].coordinates.shape[1:]
            targets = torch.full((batch_size, length, *shape), -1.0)
            for i, example in enumerate(examples):
                targets[i, : len(example.coordinates)] = example.coordinates
            batch[f"{self.coordinate_targets}_targets"] = targets
        batch[_visual_key(self.feature_store)] = torch.stack([torch.as_tensor(e.visual) for e in examples])
        return batch


class _SkipRecord(Exception):
    """A record the collator drops (with a warning), like an unreadable video."""


def _turn_span(item: dict, turn_starts: list[int]) -> tuple[int, int]:
    start = turn_starts[item["turn"]]
    begin, end = item["char_span"]
    return start + begin, start + end


def _feature_keys(path: str, video_root: str | None) -> list[str]:
    keys = []
    if video_root is not None and Path(path).is_relative_to(video_root):
        keys.append(str(Path(path).relative_to(video_root).with_suffix("")))
    return [*keys, Path(path).stem]


def _visual_key(feature_store: Any) -> str:
    return "pixel_values_videos" if feature_store is None else "video_features"
