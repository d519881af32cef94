"""`pite demo`: PiTe's whole life cycle on a CPU in minutes, on the synthetic world.

generate the world -> annotate its stage-2 captions with the real pipeline (colour/shape lexicon grounder +
Lucas-Kanade tracker) -> a tiny random PiTe with a tokenizer trained on the world's text (`init/`) ->
cache its frozen CLIP features once -> train stages 1, 2, 3 with `accelerate launch examples/train_stage.py`
-> `pite evaluate` grounding, dense captioning and QA on the held-out split, against a random-span
baseline, the majority answer and the untrained model -> teacher-forced trajectory L1 against the mean
training trajectory -> pictures of predicted trajectories and training curves -> `final/`, checked with
`AutoModel` and `pipeline("video-qa")`. Everything lands in `--output-dir` with `summary.md`/`summary.json`.

    pite demo --output-dir demo_output              # the default demo (make demo)
    pite demo --output-dir demo_output --ablation   # + "no stage 2" and "no head initialisation" rows

QA is scored by exact match: no judge LLM exists offline (`pite evaluate --judge` adds one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_MODEL_OVERRIDES", "DemoConfig", "add_subparser", "init_key", "run_demo", "trajectory_l1"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"

# The tiny PiTe the demo trains: a 2-layer CLIP tower on 64x64 frames and a 2-layer Llama; no weights may
# be downloaded, so two things stand in for what pretraining gives the real model:
# - the tower is pretrained on rendered scenes of the world's objects (`pretrain_vision_tower`: which objects,
#   where), then frozen as PiTe freezes CLIP; a random tower's CLS embedding carries no object position;
# - the language model uses 1/sqrt(hidden) (0.088) instead of 0.02: the output layer is frozen under LoRA,
#   and at 0.02 its largest reachable logit is ~2.6, which caps the answer probability near 3%.
DEMO_MODEL_OVERRIDES: dict[str, Any] = {
    "num_frames": 100,
    "vision_feature_dim": 64,
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "projection_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 8,
        "image_size": 64,
    },
    "text_config": {
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 1024,
        "initializer_range": 0.088,
    },
}


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults are what `make demo` runs (README: measured numbers)."""

    output_dir: str = "demo_output"
    num_train_videos: int = 200
    num_test_videos: int = 40
    seed: int = 0
    stage1_steps: int = 30
    stage2_steps: int = 300
    stage3_steps: int = 1000
    tower_steps: int = 3000  # pretraining steps of the vision tower (`pretrain_vision_tower`)
    batch_size: int | None = None  # None: the demo YAMLs' per-stage values
    eval_batch_size: int = 16
    ablation: bool = False
    annotation_workers: int = 2  # one per core of the 2-core target machine
    stage_overrides: dict[int, list[str]] = field(default_factory=dict)  # extra train_stage.py flags per stage


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (training runs, annotation workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Clock:
    """Times named phases (wall and CPU seconds: on a shared machine CPU time is the steadier measure)
    and prints each one as it ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def __call__(self, name: str, function: Callable[[], Any]) -> Any:
        print(f"\n=== {name} ===", flush=True)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        result = function()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.cpu_seconds[name] = round(_cpu_seconds() - cpu_start, 1)
        print(f"=== {name}: {self.seconds[name]:.1f} s ({self.cpu_seconds[name]:.1f} CPU s) ===", flush=True)
        return result


# ---------------------------------------------------------------- 1-2: world and annotation


def _read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def annotation_error(annotated: list[dict], ground_truth: list[dict], width: int, height: int) -> dict[str, float]:
    """How far the pipeline's keypoint trajectories are from the world's, phrase by phrase.

    The P keypoints of a phrase are matched to the ground truth's by the Hungarian algorithm on their mean
    distance (k-means of a symmetric shape may split it either way); the error is the Euclidean distance
    in pixels over the frames where both are visible. `visibility_agreement` is the share of (point, frame) where both
    agree on visible vs absent; `phrase_recall` the share of ground-truth phrases the pipeline annotated.
    """
    from scipy.optimize import linear_sum_assignment

    predicted = {}
    for record in annotated:
        for event in record["events"]:
            for phrase in event.get("phrases") or []:
                predicted[(record["id"], event["caption"], tuple(phrase["char_span"]))] = np.asarray(
                    phrase["trajectory"], dtype=np.float32
                )
    scale = np.array([width, height], dtype=np.float32)
    errors, agreements, found, total = [], [], 0, 0
    for record in ground_truth:
        for event in record["events"]:
            for phrase in event["phrases"]:
                total += 1
                pred = predicted.get((record["id"], event["caption"], tuple(phrase["char_span"])))
                if pred is None:
                    continue
                found += 1
                gt = np.asarray(phrase["trajectory"], dtype=np.float32)
                both = (pred[:, None, :, 0] >= 0) & (gt[None, :, :, 0] >= 0)  # [P, P, N]
                distance = np.linalg.norm((pred[:, None] - gt[None]) * scale, axis=-1)  # [P, P, N] pixels
                cost = np.where(both.any(-1), (distance * both).sum(-1) / np.maximum(both.sum(-1), 1), 1e3)
                for r, c in zip(*linear_sum_assignment(cost)):
                    errors.append(distance[r, c][both[r, c]])
                    agreements.append(((pred[r, :, 0] >= 0) == (gt[c, :, 0] >= 0)).mean())
    distances = np.concatenate(errors) if errors else np.array([np.nan])
    return {
        "keypoint_error_px": round(float(distances.mean()), 2),
        "keypoint_error_median_px": round(float(np.median(distances)), 2),
        "visibility_agreement": round(100 * float(np.mean(agreements)) if agreements else 0.0, 1),
        "phrase_recall": round(100 * found / max(total, 1), 1),
    }


# ---------------------------------------------------------------- 3: the initial model


def world_texts(world) -> list[str]:
    """The text the demo's tokenizer learns: the chat template's words, the dialogues, captions, narratives."""
    from modeling_pite.processing_pite import VICUNA_SYSTEM_PROMPT

    texts = [VICUNA_SYSTEM_PROMPT + " USER: ASSISTANT:"]
    texts += [
        turn["value"] for record in json.loads(world.files["stage3"].read_text()) for turn in record["conversations"]
    ]
    texts += [event["caption"] for record in _read_jsonl(world.files["stage2_manifest"]) for event in record["events"]]
    texts += [record["caption"] for record in _read_jsonl(world.files["stage1"])]
    return texts


TOWER_REPORT = "tower_pretraining.json"
INIT_KEY = "demo_init.json"  # what init/ was built from: a rerun rebuilds it when any of that changed


def build_initial_model(world, output_dir: Path, seed: int, tower_steps: int, progress: bool = True) -> Path:
    """A tiny PiTe (pretrained, frozen vision tower; random language model) + a BPE tokenizer trained on the
    world's text, saved as a checkpoint folder; the tower's held-out report goes to `TOWER_REPORT`."""
    import torch

    from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor
    from processing.synthetic import pretrain_vision_tower
    from processing.tokenizer import build_tokenizer

    config = PiteConfig.from_preset("tiny", **DEMO_MODEL_OVERRIDES)
    tokenizer = build_tokenizer(world_texts(world), vocab_size=config.text_config.vocab_size)
    side = config.vision_config.image_size
    video_processor = PiteVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    torch.manual_seed(seed)
    model = PiteForConditionalGeneration(config)
    report = pretrain_vision_tower(
        model.model.vision_tower,
        video_processor.image_mean,
        video_processor.image_std,
        steps=tower_steps,
        seed=seed,
        progress=progress,
    )
    print(f"vision tower pretrained: {report}", flush=True)
    model.save_pretrained(output_dir)
    PiteProcessor(video_processor=video_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    (output_dir / TOWER_REPORT).write_text(json.dumps({"steps": tower_steps, **asdict(report)}))
    return output_dir


# ---------------------------------------------------------------- 4: training


def train_stage(
    stage: int,
    previous: Path,
    data_files: list[Path],
    output_dir: Path,
    config: DemoConfig,
    world_dir: Path,
    feature_dir: Path,
    extra: list[str] = (),
) -> Path:
    """One `accelerate launch examples/train_stage.py` run (single CPU process); its log goes to `<out>.log`."""
    steps = {1: config.stage1_steps, 2: config.stage2_steps, 3: config.stage3_steps}[stage]
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(EXAMPLES / "configs" / "accelerate_cpu.yaml"),
        str(EXAMPLES / "train_stage.py"),
        "--stage", str(stage),
        "--config", str(EXAMPLES / "configs" / f"demo_stage{stage}.yaml"),
        "--model_name_or_path", str(previous),
        "--data_files", *map(str, data_files),
        "--media_folder", str(world_dir),
        "--output_dir", str(output_dir),
        "--max_steps", str(steps),
        "--seed", str(config.seed),
    ]  # fmt: skip
    if stage != 1:
        command += ["--feature_dir", str(feature_dir)]
    if config.batch_size:
        command += ["--per_device_train_batch_size", str(config.batch_size)]
    command += [*config.stage_overrides.get(stage, []), *extra]
    # what the stage's result depends on: the command, the YAML it reads and the weights it starts from
    signature = {
        "command": command[1:],
        "config": (EXAMPLES / "configs" / f"demo_stage{stage}.yaml").read_text(),
        "start_weights": hashlib.sha256((previous / "model.safetensors").read_bytes()).hexdigest(),
    }
    done_marker = output_dir / "demo_command.json"
    if done_marker.is_file() and json.loads(done_marker.read_text()) == signature:
        print(f"reusing {output_dir} (trained by an earlier run with the same command, config and start)", flush=True)
        return output_dir
    log_path = output_dir.with_suffix(".log")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(command)}\n  (log: {log_path})", flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_DISABLE_RICH": "1"}
    with log_path.open("w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"stage {stage} training failed (exit {result.returncode}); end of {log_path}:\n{tail}")
    done_marker.write_text(json.dumps(signature))
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    if losses:
        print(f"  loss {losses[0]:.3f} -> {losses[-1]:.3f} over {steps} steps", flush=True)
    return output_dir


# ---------------------------------------------------------------- 5: evaluation


# answer lengths the world's dialogues need (the longest dense caption of a 3-object video is ~200 tokens);
# the same for every model, so an untrained model's endless answers cost seconds, not minutes
MAX_NEW_TOKENS = {"grounding": 16, "qa": 16, "dense-captioning": 256}


def _evaluate(
    task: str,
    annotations: Path,
    output_dir: Path,
    *,
    model: Path | None = None,
    features: Path | None = None,
    predictions: Path | None = None,
    answers: Path | None = None,
    batch_size: int = 16,
) -> dict:
    """`pite evaluate` through its Python entry point (same parser, same report files)."""
    from modeling_pite.cli import build_parser
    from modeling_pite.evaluation.cli import evaluate
    from modeling_pite.evaluation.runner import write_report

    argv = ["evaluate", "--task", task, "--annotations", str(annotations), "--output-dir", str(output_dir),
            "--no-progress", "--batch-size", str(batch_size), "--device", "cpu"]  # fmt: skip
    if answers:
        argv += ["--answers", str(answers)]
    if predictions:
        argv += ["--predictions", str(predictions)]
    else:
        argv += ["--model", str(model), "--features", str(features), "--max-new-tokens", str(MAX_NEW_TOKENS[task])]
    report = evaluate(build_parser().parse_args(argv))
    write_report(report, output_dir)
    return report


def span_predictions(annotations: Path, path: Path, span: Callable[[], tuple[int, int]]) -> Path:
    """A grounding baseline's answers file: the frame span `span()` gives, for every query."""
    from modeling_pite.evaluation import grounding_queries, load_activitynet_captions
    from modeling_pite.temporal import format_frame_span

    answers = {
        query.query_id: format_frame_span(*span()).capitalize() + "."
        for query in grounding_queries(load_activitynet_captions(annotations))
    }
    path.write_text(json.dumps(answers))
    return path


def other_video_features(features: Mapping[str, Any], video_ids: list[str]) -> dict[str, Any]:
    """The control "another video's frames": each video gets the next one's cached features (a rotation).
    The frames are real frames of the world, they just do not show what is asked: whatever a model still
    gets right with them it gets from the text alone."""
    return {video_id: features[video_ids[(i + 1) % len(video_ids)]] for i, video_id in enumerate(video_ids)}


def write_feature_files(features: Mapping[str, Any], folder: Path) -> Path:
    """`{video_id}.safetensors` files, a feature layout `pite evaluate --features` reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for video_id, tensor in features.items():
        save_file({"video_features": tensor.contiguous()}, folder / f"{video_id}.safetensors")
    return folder


def majority_answer(instructions: Path) -> str:
    """The most frequent short answer of the training QA dialogues."""
    records = json.loads(instructions.read_text())
    counts = Counter(r["conversations"][1]["value"] for r in records if "_qa_" in r["id"])
    return counts.most_common(1)[0][0]


def majority_predictions(questions: Path, answer: str, path: Path) -> Path:
    path.write_text(json.dumps({str(q["question_id"]): answer for q in json.loads(questions.read_text())}))
    return path


def _trajectory_batches(model_dir: Path, data_file: Path, features: Mapping[str, Any], batch_size: int):
    """(model, processor, batches) of teacher-forced stage-2 inputs: the training collator on `data_file`,
    with `features` (video id -> cached `[F, D]` features) as its feature store."""
    from modeling_pite import PiteForConditionalGeneration, PiteProcessor
    from processing.collators import PiteDataCollator
    from processing.stage_data import load_stage_dataset

    model = PiteForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = PiteProcessor.from_pretrained(model_dir)
    dataset = load_stage_dataset(2, [data_file], num_points=model.config.num_trajectory_points,
                                 num_frames=model.config.num_frames)  # fmt: skip
    collator = PiteDataCollator(processor, coordinate_targets="trajectory", feature_store=features)
    records = list(dataset)
    batches = (collator(records[i : i + batch_size]) for i in range(0, len(records), batch_size))
    return model, processor, batches


def mean_trajectory(annotated: list[dict], num_points: int, num_frames: int) -> np.ndarray:
    """The constant-prediction baseline: the mean of every training keypoint trajectory, per (point, frame)."""
    trajectories = np.array(
        [p["trajectory"] for r in annotated for e in r["events"] for p in e.get("phrases") or []], dtype=np.float32
    ).reshape(-1, num_points, num_frames, 2)
    valid = trajectories >= 0
    total, count = (trajectories * valid).sum(0), valid.sum(0)
    overall = total.sum() / max(count.sum(), 1)
    return np.where(count > 0, total / np.maximum(count, 1), overall).astype(np.float32)


def trajectory_l1(
    model_dir: Path, data_file: Path, features: Mapping[str, Any], constant: np.ndarray, batch_size: int = 16
) -> dict[str, float]:
    """Teacher-forced trajectory L1 on `data_file`'s ground truth: the model's trajectory head at the phrase
    tokens (read from the previous position, as in training) vs `constant`, masked to real targets."""
    import torch

    model, _, batches = _trajectory_batches(model_dir, data_file, features, batch_size)
    model_sum = constant_sum = count = 0.0
    with torch.inference_mode():
        for batch in batches:
            targets = batch.pop("trajectory_targets")[:, 1:]
            batch.pop("labels", None)
            predictions = model(**batch).trajectories[:, :-1]
            valid = targets != -1
            model_sum += ((predictions - targets).abs() * valid).sum().item()
            constant_sum += ((torch.from_numpy(constant) - targets).abs() * valid).sum().item()
            count += valid.sum().item()
    return {"model": round(model_sum / count, 4), "constant": round(constant_sum / count, 4)}


# ---------------------------------------------------------------- 6: pictures


def plot_training_curves(stage_dirs: dict[str, Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(stage_dirs), figsize=(4.5 * len(stage_dirs), 3.5), squeeze=False)
    for axis, (name, folder) in zip(axes[0], stage_dirs.items()):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        for key in ("loss", "lm_loss", "localization_loss", "trajectory_loss"):
            points = [(entry["step"], entry[key]) for entry in history if key in entry]
            if points:
                axis.plot(*zip(*points), label=key)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.set_yscale("log")
        if axis.lines:  # a run shorter than the logging interval has no curve
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def draw_test_trajectories(
    model_dir: Path, data_file: Path, features: Mapping[str, Any], world_dir: Path, output_dir: Path
) -> list[Path]:
    """Predicted (teacher-forced) and ground-truth keypoints of the first test video's phrases, drawn on
    its 100 sampled frames, as a PNG contact sheet and a GIF. Points are drawn where the ground truth has
    the object (the head has no visibility output)."""
    import torch

    from modeling_pite.video_io import sample_video
    from modeling_pite.visualization import save_trajectory_visualization

    model, processor, batches = _trajectory_batches(model_dir, data_file, features, 1)
    record = _read_jsonl(data_file)[0]
    batch = next(batches)
    targets = batch.pop("trajectory_targets")[0, 1:]
    batch.pop("labels", None)
    with torch.inference_mode():
        predictions = model(**batch).trajectories[0, :-1]
    input_ids = batch["input_ids"][0, 1:]
    positions = (targets != -1).flatten(1).any(-1).nonzero().flatten().tolist()
    runs: list[list[int]] = []  # consecutive target positions = one phrase
    for position in positions:
        if runs and position == runs[-1][-1] + 1 and torch.equal(targets[position], targets[runs[-1][-1]]):
            runs[-1].append(position)
        else:
            runs.append([position])
    drawn = {}
    for run in runs[:3]:
        label = processor.tokenizer.decode(input_ids[run]).strip()
        truth = targets[run[0]].numpy()
        predicted = predictions[run].mean(0).numpy()
        drawn[f"pred: {label}"] = np.where(truth >= 0, predicted, -1.0)
        drawn[f"true: {label}"] = truth
    frames, metadata = sample_video(world_dir / "test" / record["video"], model.config.num_frames)
    return [
        save_trajectory_visualization(
            output_dir / f"trajectories_{record['id']}{suffix}", frames, drawn, timestamps=metadata.timestamps
        )  # fmt: skip
        for suffix in (".png", ".gif")
    ]


# ---------------------------------------------------------------- 7: the final model as users load it


def check_final_model(final_dir: Path, video: Path, question: str) -> str:
    """Load `final_dir` the two documented ways and answer one question about `video`."""
    from transformers import AutoModel, pipeline

    import modeling_pite  # noqa: F401  (registers PiTe with the Auto classes and the pipelines)

    model = AutoModel.from_pretrained(final_dir)
    print(f"AutoModel.from_pretrained({final_dir}) -> {type(model).__name__}", flush=True)
    answer = pipeline("video-qa", model=str(final_dir), device="cpu")(str(video), question=question, max_new_tokens=16)
    print(f"pipeline('video-qa', model={final_dir}): {video.name}: {question!r} -> {answer['answer']!r}", flush=True)
    return answer["answer"]


# ---------------------------------------------------------------- 9: the table


OTHER_VIDEO = "PiTe, another video's frames"
ROWS = ("PiTe (stages 1+2+3)", "w/o stage 2", "w/o head init", OTHER_VIDEO, "untrained (init)", "random span",
        "whole video", "majority answer", "mean training trajectory")  # fmt: skip
COLUMNS = (
    ("grounding mIoU", "grounding", "miou"),
    ("R1@0.5", "grounding", "r1@0.5"),
    ("QA exact match", "qa", "exact_match"),
    ("CIDEr", "dense-captioning", "cider"),
    ("METEOR", "dense-captioning", "meteor"),
    ("SODA_c", "dense-captioning", "soda_c"),
    ("trajectory L1", "trajectory", "l1"),
)


def summary_markdown(
    results: dict[str, dict], phases: dict[str, float], cpu: dict[str, float], extras: dict[str, Any]
) -> str:
    lines = ["| model | " + " | ".join(name for name, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in (name for name in ROWS if name in results):
        cells = []
        for _, task, key in COLUMNS:
            value = results[row].get(task, {}).get(key)
            cells.append("-" if value is None else f"{value:.3f}" if task == "trajectory" else f"{value:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "| phase | seconds | CPU seconds |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.1f} | {cpu[name]:.1f} |" for name, seconds in phases.items()]
    lines += ["", *(f"- {key}: {value}" for key, value in extras.items())]
    return "\n".join(lines) + "\n"


def _evaluate_model(name: str, model: Path, world, features: Path, out: Path, batch_size: int) -> dict:
    tests = out / "eval" / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    files = world.files
    return {
        "grounding": _evaluate("grounding", files["test_activitynet_captions"], tests / "grounding",
                               model=model, features=features, batch_size=batch_size),
        "qa": _evaluate("qa", files["test_qa_questions"], tests / "qa", answers=files["test_qa_answers"],
                        model=model, features=features, batch_size=batch_size),
        "dense-captioning": _evaluate("dense-captioning", files["test_activitynet_captions"], tests / "dense",
                                      model=model, features=features, batch_size=batch_size),
    }  # fmt: skip


def init_key(world_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """What `init/` depends on (kept in `init/demo_init.json`): the world its tokenizer was trained on, the
    seed, the tower's steps and the model."""
    return {
        "world": hashlib.sha256((world_dir / "world.json").read_bytes()).hexdigest(),
        "seed": config.seed,
        "tower_steps": config.tower_steps,
        "model": DEMO_MODEL_OVERRIDES,
    }


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the whole demo; returns the summary written to `<output_dir>/summary.json`."""
    from processing.annotation import AnnotationConfig, read_manifest, run_annotation
    from processing.synthetic import generate_world, load_world

    out = Path(config.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    world_dir = out / "world"

    def generate():
        if (world_dir / "world.json").is_file():  # an earlier run: keep it when it is the same world
            world = load_world(world_dir)
            sizes = (len(world.train_ids), len(world.test_ids), world.seed)
            if sizes == (config.num_train_videos, config.num_test_videos, config.seed):
                print(f"reusing {world_dir}")
                return world
        return generate_world(world_dir, config.num_train_videos, config.num_test_videos, seed=config.seed,
                              progress=False)  # fmt: skip

    world = clock("1. generate the synthetic world", generate)

    def annotate():
        items = read_manifest(world.files["stage2_manifest"])
        annotation_config = AnnotationConfig(grounding_backend="color_shape")
        # the annotations belong to this folder's world: when it was regenerated (other sizes or seed), the
        # earlier run's shards are stale and are redone; the same world resumes as before
        summary = run_annotation(items, out / "annotations", annotation_config, overwrite=True,
                                 num_workers=config.annotation_workers, progress=False)  # fmt: skip
        import pyarrow.parquet as pq

        records = [r for shard in sorted((out / "annotations" / "data").glob("*.parquet"))
                   for r in pq.read_table(shard).to_pylist()]  # fmt: skip
        width, height = world.config["width"], world.config["height"]
        error = annotation_error(records, _read_jsonl(world.files["stage2_ground_truth"]), width, height)
        print(
            f"annotated {summary['records']} videos ({summary['skipped']} phrases skipped); vs ground truth: {error}"
        )
        return records, {**error, "videos": summary["records"], "skipped_phrases": summary["skipped"]}

    annotated, annotation_report = clock("2. annotate (real pipeline: colour/shape grounder + LK tracker)", annotate)

    init_dir, features = out / "init", out / "features"

    def initialise():
        from modeling_pite.feature_extraction import extract_features

        key = init_key(world_dir, config)
        marker = init_dir / INIT_KEY
        if not marker.is_file() or json.loads(marker.read_text()) != key:
            # features of another tower would be reused; the stages see the new start in their signature
            shutil.rmtree(features, ignore_errors=True)
            build_initial_model(world, init_dir, config.seed, config.tower_steps, progress=False)
            marker.write_text(json.dumps(key))
        print(extract_features(init_dir, world_dir / "videos", features, device="cpu"))
        return json.loads((init_dir / TOWER_REPORT).read_text())

    tower_report = clock("3. initial model (tower pretraining) + tokenizer, CLIP feature cache", initialise)

    stage2_data = sorted((out / "annotations" / "data").glob("*.parquet"))
    train = {
        1: [world.files["stage1"]],
        2: stage2_data,
        3: [world.files["stage3"]],
    }

    # stage 3 keeps training the trajectory head on stage 2's data (`--trajectory_data_files`): its fresh LoRA
    # otherwise moves the hidden states the head reads (held-out L1 0.19 after stage 2, 0.48 after stage 3)
    rehearsal = ["--trajectory_data_files", *map(str, stage2_data)]

    def chain(tag: str, start: Path, stages: tuple[int, ...], final: Path, flags: dict[int, list[str]]) -> dict:
        """Train `stages` in order from `start` with per-stage extra `flags`; stage 3 writes `final`."""
        previous, folders = start, {}
        for stage in stages:
            target = (
                final if stage == 3 else out / "stages" / f"{tag.strip().replace(' ', '_')}_stage{stage}".lstrip("_")
            )
            extra = flags.get(stage, [])
            previous = clock(f"4. {tag}stage {stage}", lambda stage=stage, previous=previous, target=target, extra=extra:
                             train_stage(stage, previous, train[stage], target, config, world_dir, features, extra))  # fmt: skip
            folders[f"{tag}stage {stage}"] = previous
        return folders

    stage_dirs = chain("", init_dir, (1, 2, 3), out / "final", {3: rehearsal})
    runs = {"PiTe (stages 1+2+3)": out / "final"}
    if config.ablation:  # both start from the same stage-1 model, as in the paper's table
        stage1 = stage_dirs["stage 1"]
        runs["w/o stage 2"] = chain("no-stage2 ", stage1, (3,), out / "ablations" / "no_stage2", {})[
            "no-stage2 stage 3"
        ]  # no trajectory data anywhere: stage 3 without rehearsal
        runs["w/o head init"] = chain("no-head-init ", stage1, (2, 3), out / "ablations" / "no_head_init",
                                      {2: ["--init_trajectory_head", "false"], 3: rehearsal})["no-head-init stage 3"]  # fmt: skip
    runs["untrained (init)"] = init_dir

    test_gt = world.files["test_stage2_ground_truth"]
    constant = mean_trajectory(annotated, 3, DEMO_MODEL_OVERRIDES["num_frames"])

    from modeling_pite.feature_extraction import VideoFeatureStore

    store = VideoFeatureStore(features)

    def evaluate_all():
        shutil.rmtree(out / "eval", ignore_errors=True)  # answers of a model retrained since would be stale
        baselines = out / "eval" / "baselines"
        shuffled = other_video_features(store, world.test_ids)
        # (row, model, features for `pite evaluate`, features for the trajectory L1)
        evaluations = [(name, model, features, store) for name, model in runs.items()]
        evaluations.append((OTHER_VIDEO, runs["PiTe (stages 1+2+3)"],
                            write_feature_files(shuffled, baselines / "other_video"), shuffled))  # fmt: skip
        results: dict[str, dict] = {}
        for name, model, eval_features, trajectory_features in evaluations:
            print(f"-- {name} ({model})", flush=True)
            results[name] = _evaluate_model(name, model, world, eval_features, out, config.eval_batch_size)
            l1 = trajectory_l1(model, test_gt, trajectory_features, constant)
            results[name]["trajectory"] = {"l1": l1["model"]}
        results["mean training trajectory"] = {"trajectory": {"l1": l1["constant"]}}
        rng = np.random.default_rng(config.seed)
        span_baselines = {
            "random span": lambda: tuple(sorted(rng.integers(0, 100, size=2).tolist())),
            "whole video": lambda: (0, 99),
        }
        for name, span in span_baselines.items():
            slug = name.replace(" ", "_")
            spans = span_predictions(world.files["test_activitynet_captions"], baselines / f"{slug}.json", span)
            results[name] = {"grounding": _evaluate("grounding", world.files["test_activitynet_captions"],
                                                    baselines / slug, predictions=spans)}  # fmt: skip
        answer = majority_answer(world.files["stage3"])
        majority = majority_predictions(world.files["test_qa_questions"], answer, baselines / "majority.json")
        results["majority answer"] = {
            "qa": _evaluate(
                "qa",
                world.files["test_qa_questions"],
                baselines / "qa",
                answers=world.files["test_qa_answers"],
                predictions=majority,
            )
        }
        results["majority answer"]["answer"] = answer
        return results

    results = clock("5. evaluate on the held-out split", evaluate_all)
    model_dir = runs["PiTe (stages 1+2+3)"]

    def pictures():
        curves = plot_training_curves(stage_dirs, out / "training_curves.png")
        return [str(curves), *map(str, draw_test_trajectories(model_dir, test_gt, store, world_dir, out))]

    images = clock("6. pictures", pictures)
    first_question = json.loads(world.files["test_qa_questions"].read_text())[0]
    example = clock("7. load final/ with AutoModel and pipeline('video-qa')", lambda: check_final_model(
        model_dir, world.video_path(first_question["video_name"]), first_question["question"]))  # fmt: skip

    ours = results["PiTe (stages 1+2+3)"]
    targets = {
        "grounding mIoU >= 2x random span": ours["grounding"]["miou"]
        >= 2 * results["random span"]["grounding"]["miou"],
        "QA >= majority + 20 points": ours["qa"]["exact_match"]
        >= results["majority answer"]["qa"]["exact_match"] + 20,
        "trajectory L1 < constant": ours["trajectory"]["l1"] < results["mean training trajectory"]["trajectory"]["l1"],
    }
    extras = {
        "annotation vs ground truth": annotation_report,
        "vision tower vs mean centre (held-out scenes)": tower_report,
        "QA scoring": "exact match (no judge LLM offline)",
        "majority answer": results["majority answer"]["answer"],
        "example answer": f"{first_question['question']} -> {example!r}",
        "targets": targets,
        "total seconds": round(sum(clock.seconds.values()), 1),
        "total CPU seconds": round(sum(clock.cpu_seconds.values()), 1),
    }
    summary = {
        "config": asdict(config),
        "results": results,
        "phases": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "images": images,
        **extras,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    markdown = summary_markdown(results, clock.seconds, clock.cpu_seconds, extras)
    (out / "summary.md").write_text("# PiTe demo\n\n" + markdown)
    print("\n" + markdown, flush=True)
    print(f"outputs: {out} (summary.md, summary.json, final/, training_curves.png, trajectories_*.png/.gif)")
    return summary


def add_subparser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate a synthetic world, annotate it, train the three stages of a tiny PiTe and evaluate it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoConfig()
    parser.add_argument("--output-dir", default=defaults.output_dir)
    for name in ("num_train_videos", "num_test_videos", "seed", "stage1_steps", "stage2_steps", "stage3_steps",
                 "tower_steps", "eval_batch_size", "annotation_workers"):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the demo YAMLs')")
    parser.add_argument("--ablation", action="store_true", help="also train w/o stage 2 and w/o the head init")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    fields = {name: getattr(args, name) for name in DemoConfig.__dataclass_fields__ if hasattr(args, name)}
    summary = run_demo(DemoConfig(**fields))
    missed = [name for name, met in summary["targets"].items() if not met]
    if missed:
        print(f"targets missed: {missed}")
    return 0
