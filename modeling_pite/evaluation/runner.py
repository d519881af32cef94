"""Running a model over a benchmark, resumably, and writing the report.

`run_generation` asks a generator for answers in batches and appends each one to a JSONL as soon as it
exists (`{"id", "video", "output"}`); a rerun reads that file back and asks only for what is missing, so
a crash loses at most the batch in flight. An item whose input is bad (a video that does not decode, a
missing file or feature) is logged as `{"id", "video", "error"}`, skipped and retried on the next run.

The generator is any callable `list[EvalItem] -> list[str]`; `PiteGenerator` wraps a model with the
Hugging Face `generate` API and its processor (PiTe's, or any processor that takes `<video>` text plus
`videos=` or `video_features=`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .jsonl import append_jsonl, read_jsonl

__all__ = ["EvalItem", "PiteGenerator", "find_video", "run_generation", "write_report"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
# what a bad input raises: VideoDecodeError is a ValueError, a missing file an OSError, a missing feature a KeyError
ITEM_ERRORS = (ValueError, OSError, KeyError)


@dataclass
class EvalItem:
    """One model query: `item_id` keys the answer (query id, video id or question id)."""

    item_id: str
    video_id: str
    prompt: str


def find_video(video_dir: str | Path, video_id: str) -> Path:
    """`{video_dir}/{video_id}{ext}` for the usual extensions (also without ActivityNet's "v_" prefix)."""
    names = [video_id] + ([video_id[2:]] if video_id.startswith("v_") else [])
    for name in names:
        for ext in ("", *VIDEO_EXTENSIONS):
            path = Path(video_dir) / f"{name}{ext}"
            if path.is_file():
                return path
    raise FileNotFoundError(f"no video for {video_id!r} in {video_dir} (tried {', '.join(VIDEO_EXTENSIONS)})")


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_generation(
    items: Sequence[EvalItem],
    generate: Callable[[list[EvalItem]], list[str]],
    predictions_path: str | Path,
    *,
    batch_size: int = 1,
    progress: bool = True,
) -> tuple[dict[str, str], dict[str, str]]:
    """Answers for all `items` (reused from `predictions_path`, else generated and appended there).

    Returns `(outputs by item id, errors by item id)`. A batch that fails on a bad input is retried one
    item at a time so only the bad item is skipped. Raises when every item failed: that is a setup
    problem (wrong video folder, wrong model), not bad data.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = {r["id"]: r["output"] for r in read_jsonl(predictions_path) if "id" in r and "output" in r}
    todo = [item for item in items if item.item_id not in outputs]
    errors: dict[str, str] = {}
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="generating", disable=not progress)
    for batch in _batches(todo, batch_size):
        try:
            answers = list(zip(batch, generate(list(batch))))
        except ITEM_ERRORS:
            answers = []
            for item in batch:
                try:
                    answers.append((item, generate([item])[0]))
                except ITEM_ERRORS as e:
                    errors[item.item_id] = f"{type(e).__name__}: {e}"
                    logger.warning("skipping %s: %s", item.item_id, errors[item.item_id])
                    append_jsonl(
                        predictions_path, {"id": item.item_id, "video": item.video_id, "error": errors[item.item_id]}
                    )
        for item, answer in answers:
            outputs[item.item_id] = answer
            append_jsonl(predictions_path, {"id": item.item_id, "video": item.video_id, "output": answer})
        bar.update(len(batch))
    bar.close()
    if items and len(errors) == len(items):
        raise RuntimeError(f"all {len(items)} items failed; the first: {next(iter(errors.values()))}")
    return {item.item_id: outputs[item.item_id] for item in items if item.item_id in outputs}, errors


class PiteGenerator:
    """Greedy answers from a video LLM: `model.generate` on `processor(text=..., videos=|video_features=...)`.

    Videos come from `video_dir` (decoded by the processor) or, with `feature_loader`, as precomputed
    per-frame features (`video_id -> [F, D]` tensor), which skips the vision tower's input pipeline.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        video_dir: str | Path | None = None,
        feature_loader: Callable[[str], object] | None = None,
        max_new_tokens: int = 256,
        **generate_kwargs,
    ):
        if (video_dir is None) == (feature_loader is None):
            raise ValueError("give exactly one of video_dir and feature_loader")
        self.model, self.processor = model, processor
        self.video_dir, self.feature_loader = video_dir, feature_loader
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **generate_kwargs}

    def _prompt(self, item: EvalItem) -> str:
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": item.prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def __call__(self, items: list[EvalItem]) -> list[str]:
        import torch

        texts = [self._prompt(item) for item in items]
        tokenizer = self.processor.tokenizer
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched generation pads left
        try:
            if self.feature_loader is not None:
                features = [self.feature_loader(item.video_id) for item in items]
                inputs = self.processor(text=texts, video_features=features, padding=True, return_tensors="pt")
            else:
                videos = [os.fspath(find_video(self.video_dir, item.video_id)) for item in items]
                inputs = self.processor(text=texts, videos=videos, padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = padding_side
        inputs = inputs.to(self.model.device)
        for key in ("pixel_values_videos", "video_features"):
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(self.model.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, **self.generate_kwargs)
        return self.processor.post_process_video_text_to_text(generated[:, inputs["input_ids"].shape[1] :])


_LABELS = {
    "miou": "mIoU",
    "r1@0.3": "R1@0.3",
    "r1@0.5": "R1@0.5",
    "r1@0.7": "R1@0.7",
    "unparseable": "unparseable answers (%)",
    "meteor": "METEOR",
    "cider": "CIDEr",
    "soda_c": "SODA_c",
    "exact_match": "exact match (%)",
    "accuracy": "accuracy (%)",
    "score": "score (0-5)",
}


def write_report(report: Mapping[str, object], output_dir: str | Path) -> tuple[Path, Path]:
    """`report.json` (the flat dict) and `report.md` (a table of the headline metrics) in `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    judge = report.get("judge")
    title = report.get("model") or report.get("predictions_file") or ""
    lines = [f"# {report.get('task', 'evaluation')}: {title}", "", "| metric | value |", "|---|---|"]
    for key, label in _LABELS.items():
        if key in report:
            judged = f" (judge: {judge})" if judge and key in ("accuracy", "score") else ""
            lines.append(f"| {label}{judged} | {report[key]:.2f} |")
    counts = [f"{k}: {report[k]}" for k in ("num_items", "failed", "missing", "missing_videos") if k in report]
    md_path.write_text("\n".join([*lines, "", ", ".join(counts), ""]))
    return json_path, md_path
