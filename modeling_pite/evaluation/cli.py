"""`pite evaluate`: run a model over a benchmark (or take its answers from a file) and score it.

    pite evaluate --task grounding --annotations val_2.json --model ckpt/ --videos videos/ --output-dir out/
    pite evaluate --task dense-captioning --annotations val_2.json --predictions submission.json --output-dir out/
    pite evaluate --task qa --annotations test_q.json --answers test_a.json --model ckpt/ --features feats/ \
        --judge openai --judge-model gpt-3.5-turbo --output-dir out/

Writes `predictions.jsonl` (model runs; resumable), `report.json`, `report.md` and, for QA with a judge,
`verdicts.jsonl` into `--output-dir`. See docs/evaluation.md for the keys.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .annotations import (
    AnnotationError,
    VideoCaptions,
    grounding_queries,
    load_activitynet_captions,
    load_charades_sta,
    load_durations,
    load_video_qa,
)
from .jsonl import read_jsonl
from .runner import EvalItem, PiteGenerator, find_video, run_generation, write_report

__all__ = ["add_subparser", "evaluate", "load_answers"]

TASKS = ("grounding", "dense-captioning", "qa")
_ID_KEYS = ("id", "query_id", "question_id", "video_id", "video_name")
_TEXT_KEYS = ("output", "answer", "pred", "prediction", "text")


def add_subparser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model (or a predictions file) on grounding, dense captioning or video QA",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument(
        "--annotations",
        required=True,
        help="ActivityNet Captions JSON, Charades-STA .txt lines (grounding) or a QA questions JSON",
    )
    parser.add_argument("--answers", help="QA: the answers JSON matching --annotations")
    parser.add_argument("--durations", help="Charades-STA: durations as {vid: seconds} JSON or a CSV with id,length")
    parser.add_argument("--output-dir", required=True, type=Path)
    source = parser.add_argument_group("what to score: a predictions file, or a model run")
    source.add_argument(
        "--predictions",
        help='existing answers: {"id": "text"} JSON/JSONL (grounding: "vid#index"; QA: question_id), or a '
        "densevid_eval submission / {vid: text} JSON (dense captioning)",
    )
    source.add_argument("--model", help="a PiTe checkpoint directory (or any HF video LLM with a processor)")
    source.add_argument("--processor", help="processor directory (default: --model)")
    source.add_argument("--videos", help="folder with {video_id}.mp4/.mkv/.webm/...")
    source.add_argument("--features", help="folder with cached per-frame features {video_id}.npy / .safetensors")
    source.add_argument("--batch-size", type=int, default=1)
    source.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: 32 grounding, 512 captioning, 64 QA"
    )
    source.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda when available)")
    source.add_argument(
        "--limit", type=int, default=None, help="only the first N videos (grounding/captioning) or questions"
    )
    judge = parser.add_argument_group("QA judge (Video-ChatGPT protocol)")
    judge.add_argument("--judge", choices=("none", "transformers", "openai"), default="none")
    judge.add_argument("--judge-model", help="local model path (transformers) or model name (openai)")
    judge.add_argument("--judge-base-url", help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL or OpenAI)")
    judge.add_argument("--judge-api-key", help="API key (default: $OPENAI_API_KEY)")
    judge.add_argument("--judge-max-attempts", type=int, default=3)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    report = evaluate(args)
    json_path, md_path = write_report(report, args.output_dir)
    print(md_path.read_text())
    print(f"report: {json_path}")
    return 0


def load_answers(path: str | Path) -> dict[str, str]:
    """Raw model answers keyed by item id from `{id: text}` JSON, a JSON list or JSONL of records.

    Records may be `{"id": ..., "output": ...}` (what `pite evaluate` writes; `query_id`/`question_id`
    and `answer`/`pred` are accepted too) or single-entry `{id: text}` objects.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        records = list(read_jsonl(path))
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AnnotationError(f"{path}: file not found") from None
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        if not isinstance(data, list):
            raise AnnotationError(f"{path}: expected an object {{id: text}} or a list of records")
        records = data
    answers = {}
    for i, record in enumerate(records):
        key = next((k for k in _ID_KEYS if k in record), None) if isinstance(record, dict) else None
        text = next((k for k in _TEXT_KEYS if k in record), None) if key else None
        if key and text:
            answers[str(record[key])] = str(record[text])
        elif isinstance(record, dict) and "error" in record:
            continue  # a skipped item of an earlier run
        elif isinstance(record, dict) and len(record) == 1:
            answers.update({str(k): str(v) for k, v in record.items()})
        else:
            raise AnnotationError(f"{path}: record {i} has no id ({'/'.join(_ID_KEYS)}) with a text, got {record!r}")
    return answers


def _load_model(args: argparse.Namespace):
    import torch

    from ..modeling_pite import PiteForConditionalGeneration
    from ..processing_pite import PiteProcessor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = PiteForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(device).eval()
    processor = PiteProcessor.from_pretrained(args.processor or args.model)
    return model, processor


def _feature_loader(folder: str | Path):
    """`video_id -> [F, D]` features: a `pite extract-features` cache (`VideoFeatureStore`, has `index.json`),
    else per-video files `{folder}/{video_id}.npy` (VTimeLLM's cache layout) or `.safetensors`."""
    import numpy as np
    import torch

    from ..feature_extraction import INDEX_NAME, VideoFeatureStore

    store = VideoFeatureStore(folder) if (Path(folder) / INDEX_NAME).is_file() else None

    def load(video_id: str):
        names = [video_id] + ([video_id[2:]] if video_id.startswith("v_") else [])
        for name in names:
            if store is not None:
                if name in store:
                    return store[name]
                continue
            path = Path(folder) / f"{name}.npy"
            if path.is_file():
                return torch.from_numpy(np.load(path, allow_pickle=False))
            path = Path(folder) / f"{name}.safetensors"
            if path.is_file():
                from safetensors.torch import load_file

                tensors = load_file(path)
                return tensors.get("video_features", next(iter(tensors.values())))
        raise FileNotFoundError(f"no cached features for {video_id!r} in {folder}")

    return load


def _generate(args: argparse.Namespace, items: list[EvalItem], default_max_new_tokens: int) -> tuple[dict, dict]:
    if not args.model:
        raise SystemExit("pite evaluate: give --predictions FILE, or --model DIR with --videos or --features")
    if (args.videos is None) == (args.features is None):
        raise SystemExit("pite evaluate: a model run needs exactly one of --videos and --features")
    model, processor = _load_model(args)
    generator = PiteGenerator(
        model,
        processor,
        video_dir=args.videos,
        feature_loader=_feature_loader(args.features) if args.features else None,
        max_new_tokens=args.max_new_tokens or default_max_new_tokens,
    )
    return run_generation(
        items,
        generator,
        args.output_dir / "predictions.jsonl",
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


def _fill_durations(videos: dict[str, VideoCaptions], video_dir: str | None) -> None:
    """Charades-STA carries no durations: read them from the video files when they are at hand."""
    missing = [v for v in videos.values() if v.duration is None]
    if missing and video_dir:
        from ..video_io import sample_video

        for captions in missing:
            captions.duration = sample_video(find_video(video_dir, captions.video_id), 1)[1].duration


def _reference_videos(args: argparse.Namespace) -> dict[str, VideoCaptions]:
    if args.annotations.endswith(".txt"):
        durations = load_durations(args.durations) if args.durations else None
        videos = load_charades_sta(args.annotations, durations)
    else:
        videos = load_activitynet_captions(args.annotations)
    if args.limit is not None:
        videos = dict(list(videos.items())[: args.limit])
    _fill_durations(videos, args.videos)
    return videos


def _evaluate_grounding(args: argparse.Namespace) -> dict:
    from .grounding import grounding_prompt, score_grounding

    queries = grounding_queries(_reference_videos(args))
    errors = {}
    if args.predictions:
        answers = load_answers(args.predictions)
    else:
        items = [EvalItem(q.query_id, q.video_id, grounding_prompt(q.sentence)) for q in queries]
        answers, errors = _generate(args, items, 32)
    report, _ = score_grounding(answers, queries)
    return {**report, "num_items": len(queries), "failed": len(errors)}


def _evaluate_dense_captioning(args: argparse.Namespace) -> dict:
    from .caption_metrics import CaptionScorer, require_java
    from .dense_captioning import (
        DENSE_CAPTIONING_PROMPT,
        dense_captions_from_text,
        evaluate_dense_captions,
        load_densevid_submission,
    )

    require_java()  # fail before a long model run, not after it
    references = _reference_videos(args)
    errors = {}
    submission = None
    if args.predictions:
        answers = load_answers(args.predictions)
        if "results" in answers:
            submission, answers = load_densevid_submission(args.predictions), {}
    else:
        items = [EvalItem(vid, vid, DENSE_CAPTIONING_PROMPT) for vid in references]
        answers, errors = _generate(args, items, 512)
    if submission is None:
        for vid in answers:
            if vid in references and references[vid].duration is None:
                raise AnnotationError(f"{args.annotations}: video {vid!r} has no duration to convert frame spans")
        submission = {
            vid: dense_captions_from_text(text, references[vid].duration)
            for vid, text in answers.items()
            if vid in references
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "submission.json").write_text(json.dumps({"version": "VERSION 1.0", "results": submission}))
    with CaptionScorer() as scorer:
        report, _ = evaluate_dense_captions(submission, references, scorer=scorer, progress=not args.no_progress)
    return {**report, "num_items": len(references), "failed": len(errors)}


def _build_judge(args: argparse.Namespace):
    from .qa_judge import OpenAIJudge, TransformersJudge

    if args.judge == "transformers":
        if not args.judge_model:
            raise SystemExit("pite evaluate: --judge transformers needs --judge-model PATH")
        return TransformersJudge(args.judge_model)
    if args.judge == "openai":
        return OpenAIJudge(args.judge_model or "gpt-3.5-turbo", args.judge_base_url, args.judge_api_key)
    return None


def _evaluate_qa(args: argparse.Namespace) -> dict:
    from .qa_judge import score_qa

    if not args.answers:
        raise SystemExit("pite evaluate: --task qa needs --answers (the answers file of --annotations)")
    samples = load_video_qa(args.annotations, args.answers)
    if args.limit is not None:
        samples = samples[: args.limit]
    errors = {}
    if args.predictions:
        predictions = load_answers(args.predictions)
    else:
        items = [EvalItem(s.question_id, s.video_id, s.question) for s in samples]
        predictions, errors = _generate(args, items, 64)
    report, _ = score_qa(
        samples,
        predictions,
        _build_judge(args),
        max_attempts=args.judge_max_attempts,
        verdicts_path=args.output_dir / "verdicts.jsonl",
        progress=not args.no_progress,
    )
    return {**report, "num_items": len(samples), "failed": len(errors)}


def evaluate(args: argparse.Namespace) -> dict:
    """Score one task as the parsed `pite evaluate` arguments say; returns the flat report."""
    args.output_dir = Path(args.output_dir)
    run = {"grounding": _evaluate_grounding, "dense-captioning": _evaluate_dense_captioning, "qa": _evaluate_qa}
    report = run[args.task](args)
    return {
        "task": args.task,
        "annotations": str(args.annotations),
        "model": args.model,
        "predictions_file": str(args.predictions) if args.predictions else str(args.output_dir / "predictions.jsonl"),
        **report,
    }
