"""`generate_world`: write a whole synthetic dataset (videos, images, every stage's files, test splits).

Layout of `output_dir` (paths inside records are relative to the file that holds them):

    world.json                          specs of every video and image (`load_world` rebuilds them)
    videos/{id}.mp4                     train_XXXX and test_XXXX videos (libx264)
    images/{id}.png                     stage-1 still scenes
    stage1_localized_narratives.jsonl   Localized-Narratives records of the images
    stage2_manifest.jsonl               annotation input: {id, video, duration, events: [{caption, start, end}]}
    stage2_ground_truth.jsonl           the same with phrases and exact [P, N, 2] trajectories (contract 6)
    stage3_instructions.json            LLaVA-style dialogues: QA, grounding, dense captioning
    test/activitynet_captions.json      {vid: {duration, timestamps, sentences}}
    test/qa_questions.json, test/qa_answers.json   Video-ChatGPT QA files
    test/stage2_manifest.jsonl, test/stage2_ground_truth.jsonl

Every video, image and text item is drawn from its own generator seeded by `(seed, split, index)`, so
a world with more videos starts with the same videos as a smaller one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from modeling_pite.evaluation.dense_captioning import DENSE_CAPTIONING_PROMPT
from modeling_pite.evaluation.grounding import grounding_prompt
from modeling_pite.temporal import format_frame_span, seconds_to_frame_index

from ..video_writer import write_video
from .captions import Event, localized_narrative, reference_time, video_events, video_qa
from .sampling import sample_image_spec, sample_video_spec
from .world import VideoSpec

__all__ = ["WorldManifest", "generate_world", "load_world", "stage2_record"]

WORLD_FILE = "world.json"
_SPLIT_CODES = {"train": 0, "test": 1, "image": 2}
# The same bytes on every run: one thread, and `cpu-independent` (x264 otherwise picks SIMD paths by the
# core it starts on, and on a VM whose cores report different CPU flags a video comes out differently on
# different runs). crf 18 keeps the textures crisp.
DEFAULT_CODEC_OPTIONS = {"crf": "18", "threads": "1", "x264-params": "cpu-independent=1"}


@dataclass
class WorldManifest:
    """A generated world: its specs and the files written. `files` maps a short name to a path."""

    output_dir: Path
    seed: int
    config: dict
    videos: dict[str, VideoSpec]
    images: dict[str, VideoSpec]
    train_ids: list[str]
    test_ids: list[str]
    files: dict[str, Path] = field(default_factory=dict)

    def video_path(self, video_id: str) -> Path:
        return self.output_dir / "videos" / f"{video_id}.mp4"

    def image_path(self, image_id: str) -> Path:
        return self.output_dir / "images" / f"{image_id}.png"

    def events(self, video_id: str) -> list[Event]:
        return video_events(self.videos[video_id])


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, stream])


def _frame_span(event: Event, duration: float, num_frames: int) -> tuple[int, int]:
    return seconds_to_frame_index(event.start, duration, num_frames), seconds_to_frame_index(
        event.end, duration, num_frames
    )


def stage2_record(
    spec: VideoSpec,
    video: str,
    events: list[Event] | None = None,
    trajectories: bool = True,
    num_points: int = 3,
    num_frames: int = 100,
) -> dict:
    """A stage-2 record (contract 6); without `trajectories`, the annotation pipeline's input."""
    events = video_events(spec) if events is None else events
    record_events = []
    for event in events:
        item = {"caption": event.caption, "start": round(event.start, 4), "end": round(event.end, 4)}
        if trajectories:
            item["phrases"] = [
                {
                    "text": phrase.text,
                    "char_span": list(phrase.char_span),
                    "trajectory": np.round(
                        spec.keypoint_trajectories(
                            phrase.object_index,
                            reference_time(spec, event, phrase),
                            num_points,
                            num_frames,
                            span=(event.start, event.end),
                        ),
                        5,
                    ).tolist(),
                }
                for phrase in event.phrases
            ]
        record_events.append(item)
    return {"id": spec.video_id, "video": video, "duration": spec.duration, "events": record_events}


def _instructions(spec: VideoSpec, video: str, events: list[Event], rng: np.random.Generator) -> list[dict]:
    def record(kind: str, k: int, question: str, answer: str) -> dict:
        return {
            "id": f"{spec.video_id}_{kind}_{k}",
            "video": video,
            "conversations": [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}],
        }

    records = [record("qa", k, item.question, item.answer) for k, item in enumerate(video_qa(spec, rng, events))]
    captions = [event.caption for event in events]
    for k, event in enumerate(events):
        if captions.count(event.caption) == 1:  # an ambiguous query has no single answer
            span = format_frame_span(*_frame_span(event, spec.duration, 100))
            records.append(record("grounding", k, grounding_prompt(event.caption), f"{span[0].upper()}{span[1:]}."))
    dense = [
        {"event": event.caption, "timestamps": format_frame_span(*_frame_span(event, spec.duration, 100))}
        for event in events
    ]
    records.append(record("dense", 0, DENSE_CAPTIONING_PROMPT, json.dumps(dense)))
    return records


def _write_json(path: Path, data, lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            f.writelines(json.dumps(item) + "\n" for item in data)
        else:
            json.dump(data, f, indent=1)
    return path


def generate_world(
    output_dir: str | Path,
    num_train_videos: int,
    num_test_videos: int,
    seed: int = 0,
    width: int = 64,
    height: int = 64,
    fps: float = 10.0,
    duration_range: tuple[float, float] = (4.0, 8.0),
    num_objects: tuple[int, int] = (1, 3),
    num_images: int | None = None,
    num_points: int = 3,
    num_frames: int = 100,
    codec: str = "libx264",
    codec_options: dict[str, str] | None = None,
    progress: bool = True,
) -> WorldManifest:
    """Generate and write a synthetic world (see the module docstring for the files). Deterministic by seed.

    `num_images` stage-1 images default to `num_train_videos`. `num_points`/`num_frames` shape the
    ground-truth trajectories `[P, N, 2]`.
    """
    output_dir = Path(output_dir)
    config = {
        "width": width,
        "height": height,
        "fps": fps,
        "duration_range": list(duration_range),
        "num_objects": list(num_objects),
        "num_points": num_points,
        "num_frames": num_frames,
        "codec": codec,
    }
    splits = {
        "train": [f"train_{i:04d}" for i in range(num_train_videos)],
        "test": [f"test_{i:04d}" for i in range(num_test_videos)],
    }
    videos = {
        video_id: sample_video_spec(
            _rng(seed, split, i, 0), video_id, width, height, fps, tuple(duration_range), tuple(num_objects)
        )
        for split, ids in splits.items()
        for i, video_id in enumerate(ids)
    }
    num_images = num_train_videos if num_images is None else num_images
    images = {
        f"image_{i:04d}": sample_image_spec(
            _rng(seed, "image", i, 0), f"image_{i:04d}", width, height, tuple(num_objects)
        )
        for i in range(num_images)
    }
    manifest = WorldManifest(output_dir, seed, config, videos, images, splits["train"], splits["test"])
    options = {**DEFAULT_CODEC_OPTIONS, **(codec_options or {})} if codec == "libx264" else dict(codec_options or {})

    for video_id, spec in tqdm(videos.items(), desc="synthetic videos", disable=not progress):
        write_video(manifest.video_path(video_id), spec.frames(), fps=fps, codec=codec, options=options)
    narratives = []
    for i, (image_id, spec) in enumerate(images.items()):
        path = manifest.image_path(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(spec.render_frame(0.0)).save(path)
        record, _ = localized_narrative(spec, _rng(seed, "image", i, 1), f"images/{image_id}.png")
        narratives.append(record)
    manifest.files["stage1"] = _write_json(output_dir / "stage1_localized_narratives.jsonl", narratives, lines=True)

    for split, folder in (("train", output_dir), ("test", output_dir / "test")):
        prefix = "" if split == "train" else "../"
        ground_truth, inputs, instructions = [], [], []
        for i, video_id in enumerate(tqdm(splits[split], desc=f"{split} annotations", disable=not progress)):
            spec, video = videos[video_id], f"{prefix}videos/{video_id}.mp4"
            events = video_events(spec)
            ground_truth.append(stage2_record(spec, video, events, True, num_points, num_frames))
            inputs.append(stage2_record(spec, video, events, trajectories=False))
            if split == "train":
                instructions += _instructions(spec, video, events, _rng(seed, split, i, 1))
        key = "" if split == "train" else "test_"
        manifest.files[f"{key}stage2_manifest"] = _write_json(folder / "stage2_manifest.jsonl", inputs, lines=True)
        manifest.files[f"{key}stage2_ground_truth"] = _write_json(
            folder / "stage2_ground_truth.jsonl", ground_truth, lines=True
        )
        if split == "train":
            manifest.files["stage3"] = _write_json(output_dir / "stage3_instructions.json", instructions)
    _write_test_benchmarks(manifest)
    manifest.files["world"] = _write_json(
        output_dir / WORLD_FILE,
        {
            "seed": seed,
            "config": config,
            "splits": splits,
            "videos": [spec.to_dict() for spec in videos.values()],
            "images": [spec.to_dict() for spec in images.values()],
            "files": {name: str(path.relative_to(output_dir)) for name, path in manifest.files.items()},
        },
    )
    return manifest


def _write_test_benchmarks(manifest: WorldManifest) -> None:
    """ActivityNet-Captions and Video-ChatGPT QA files for the test videos."""
    captions, questions, answers = {}, [], []
    for i, video_id in enumerate(manifest.test_ids):
        spec = manifest.videos[video_id]
        events = video_events(spec)
        captions[video_id] = {
            "duration": spec.duration,
            "timestamps": [[round(e.start, 4), round(e.end, 4)] for e in events],
            "sentences": [e.caption for e in events],
        }
        for k, item in enumerate(video_qa(spec, _rng(manifest.seed, "test", i, 1), events)):
            question_id = f"{video_id}_{k}"
            questions.append({"video_name": video_id, "question": item.question, "question_id": question_id})
            answers.append({"answer": item.answer, "type": item.type, "question_id": question_id})
    test = manifest.output_dir / "test"
    manifest.files["test_activitynet_captions"] = _write_json(test / "activitynet_captions.json", captions)
    manifest.files["test_qa_questions"] = _write_json(test / "qa_questions.json", questions)
    manifest.files["test_qa_answers"] = _write_json(test / "qa_answers.json", answers)


def load_world(output_dir: str | Path) -> WorldManifest:
    """Rebuild the `WorldManifest` of a generated world from its `world.json` (nothing is re-rendered)."""
    output_dir = Path(output_dir)
    path = output_dir / WORLD_FILE
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        videos = {item["video_id"]: VideoSpec.from_dict(item) for item in data["videos"]}
        images = {item["video_id"]: VideoSpec.from_dict(item) for item in data["images"]}
        splits, seed, config, files = data["splits"], data["seed"], data["config"], data["files"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; is {output_dir} a world written by generate_world?") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a synthetic world description ({type(e).__name__}: {e})") from None
    return WorldManifest(
        output_dir,
        seed,
        config,
        videos,
        images,
        splits["train"],
        splits["test"],
        {**{name: output_dir / relative for name, relative in files.items()}, "world": path},
    )
