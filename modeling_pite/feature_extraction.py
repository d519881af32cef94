"""Precompute PiTe's frame features: CLIP `image_embeds` of N sampled frames per video, cached on disk.

The vision tower is frozen in every PiTe stage, so training and evaluation can read `[N, 768]` features
instead of decoding and encoding 100 frames per step. `pite extract-features` writes them as fp16
safetensors shards plus `index.json` (video id -> shard); a rerun skips videos already in the index, and
videos that fail to decode are listed in `failed.json` and skipped. `VideoFeatureStore` reads the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

from .video_io import VideoDecodeError
from .video_processing_pite import PiteVideoProcessor

__all__ = ["VideoFeatureStore", "extract_features", "list_videos", "load_vision_tower"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FAILED_NAME = "failed.json"
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts"}
_TOWER_PREFIX = "model.vision_tower."  # where PiteForConditionalGeneration keeps the CLIP tower


class VideoFeatureStore:
    """Read access to a feature cache: `store[video_id]` -> `[N, D]` fp16 tensor (shards opened lazily)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index_file = self.path / INDEX_NAME
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file}: no feature index here (run `pite extract-features` first)")
        index = json.loads(index_file.read_text())
        self.metadata: dict = index.get("metadata", {})
        self.weight_map: dict[str, str] = index["weight_map"]
        self._shards: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.weight_map)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.weight_map

    def __iter__(self) -> Iterator[str]:
        return iter(self.weight_map)

    def keys(self):
        return self.weight_map.keys()

    def __getitem__(self, video_id: str) -> torch.Tensor:
        if video_id not in self.weight_map:
            raise KeyError(f"{self.path}: no features for video {video_id!r}")
        shard = self.weight_map[video_id]
        if shard not in self._shards:
            self._shards[shard] = safe_open(str(self.path / shard), framework="pt")
        return self._shards[shard].get_tensor(video_id)


def list_videos(source: str | os.PathLike) -> dict[str, Path]:
    """Video id -> path, from a folder (video files under it; id = relative path without suffix) or a list
    file (one path per line, relative to the list's folder, optionally `id<TAB>path`; `#` starts a comment)."""
    source = Path(source)
    videos: dict[str, Path] = {}
    if source.is_dir():
        entries = [
            (str(path.relative_to(source).with_suffix("")), path)
            for path in sorted(source.rglob("*"))
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()
        ]
    elif source.is_file():
        entries = []
        for line in source.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            video_id, _, path = line.partition("\t") if "\t" in line else (None, "", line)
            path = Path(path.strip())
            path = path if path.is_absolute() else source.parent / path
            entries.append((video_id.strip() if video_id else path.stem, path))
    else:
        raise FileNotFoundError(f"{source}: neither a folder of videos nor a list file")
    for video_id, path in entries:
        if video_id in videos:
            raise ValueError(f"{source}: two videos share the id {video_id!r} ({videos[video_id]} and {path})")
        videos[video_id] = path
    return videos


def load_vision_tower(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> CLIPVisionModelWithProjection:
    """The CLIP tower of a PiTe checkpoint folder (only its weights are read), or a CLIP (vision) checkpoint."""
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "pite":
        return CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype).eval()
    vision_config = config.vision_config
    if not isinstance(vision_config, CLIPVisionConfig):
        vision_config = CLIPVisionConfig(**vision_config.to_dict())
    tower = CLIPVisionModelWithProjection._from_config(vision_config, dtype=dtype)
    state_dict = {}
    for shard in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                if key.startswith(_TOWER_PREFIX):
                    state_dict[key[len(_TOWER_PREFIX) :]] = weights.get_tensor(key)
    missing = set(tower.state_dict()) - set(state_dict)
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks vision tower weights {sorted(missing)[:3]}...")
    tower.load_state_dict(state_dict, strict=True)
    return tower.eval()


def _video_processor_for(path: str | os.PathLike, tower: CLIPVisionModelWithProjection, num_frames: int | None):
    """The checkpoint's own video processor when it has one; else CLIP preprocessing at the tower's size
    and the checkpoint's `num_frames`."""
    path = Path(path)
    if (path / "video_preprocessor_config.json").is_file() or (path / "processor_config.json").is_file():
        processor = PiteVideoProcessor.from_pretrained(path)
    else:
        size = tower.config.image_size
        processor = PiteVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor.num_frames = getattr(AutoConfig.from_pretrained(path), "num_frames", processor.num_frames)
    if num_frames is not None:
        processor.num_frames = num_frames
    return processor


class _VideoDataset(Dataset):
    """Decodes and preprocesses one video per item (in DataLoader workers); failures come back as text."""

    def __init__(self, videos: list[tuple[str, Path]], video_processor: PiteVideoProcessor):
        self.videos = videos
        self.video_processor = video_processor

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | str]:
        video_id, path = self.videos[index]
        try:
            pixel_values = self.video_processor(str(path), return_tensors="pt")["pixel_values_videos"][0]
        except VideoDecodeError as error:
            return video_id, str(error)
        return video_id, pixel_values


def _first(batch):
    return batch[0]


@torch.no_grad()
def extract_features(
    model_path: str | os.PathLike,
    videos: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_frames: int | None = None,
    batch_size: int = 256,
    device: str | None = None,
    shard_size: int = 500,
    num_workers: int = 0,
) -> dict[str, int]:
    """Encode every video not yet in `output_dir`'s index; returns counts of done, skipped and failed videos.

    `batch_size` is the number of frames per forward pass of the tower. A shard (and the index) is written
    every `shard_size` videos, so an interrupted run loses at most one shard of work.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tower = load_vision_tower(model_path, dtype=dtype).to(device)
    video_processor = _video_processor_for(model_path, tower, num_frames)

    index_file = output_dir / INDEX_NAME
    index = json.loads(index_file.read_text()) if index_file.is_file() else {"weight_map": {}}
    metadata = {"num_frames": video_processor.num_frames, "feature_dim": tower.config.projection_dim}
    previous = {key: index.get("metadata", {}).get(key, value) for key, value in metadata.items()}
    if previous != metadata:
        raise ValueError(f"{output_dir}: the cache holds features with {previous}, this run would write {metadata}")
    index["metadata"] = {**metadata, "model": str(model_path), "dtype": "float16"}
    all_videos = list_videos(videos)
    todo = [(video_id, path) for video_id, path in all_videos.items() if video_id not in index["weight_map"]]
    failed: dict[str, str] = {}
    pending: dict[str, torch.Tensor] = {}

    def flush():
        if pending:
            shard = _next_shard_name(output_dir, index["weight_map"])
            save_file(pending, str(output_dir / shard), metadata={"format": "pt"})
            index["weight_map"].update(dict.fromkeys(pending, shard))
            pending.clear()
        _write_json(index_file, index)
        _write_json(output_dir / FAILED_NAME, failed)

    loader = DataLoader(_VideoDataset(todo, video_processor), batch_size=1, collate_fn=_first, num_workers=num_workers)
    for video_id, pixel_values in tqdm(loader, total=len(todo), desc="extracting features", unit="video"):
        if isinstance(pixel_values, str):
            failed[video_id] = pixel_values
            logger.warning("skipping %s", pixel_values)
            continue
        embeds = [tower(pixel_values=chunk.to(device, dtype)).image_embeds for chunk in pixel_values.split(batch_size)]
        pending[video_id] = torch.cat(embeds).to("cpu", torch.float16).contiguous()
        if len(pending) >= shard_size:
            flush()
    flush()
    return {"extracted": len(todo) - len(failed), "skipped": len(all_videos) - len(todo), "failed": len(failed)}


def _next_shard_name(output_dir: Path, weight_map: dict[str, str]) -> str:
    number = len(set(weight_map.values()))
    while (output_dir / f"features-{number:05d}.safetensors").exists():
        number += 1
    return f"features-{number:05d}.safetensors"


def _write_json(path: Path, data) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)  # atomic: a crash never leaves a half-written index


def add_subparser(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract-features",
        help="cache CLIP frame features of videos as safetensors shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="PiTe checkpoint folder, or a CLIP (vision) checkpoint")
    parser.add_argument("--videos", required=True, help="folder of videos, or a list file (one path per line)")
    parser.add_argument("--output", required=True, help="cache folder (index.json, shards, failed.json)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the processor's)")
    parser.add_argument("--batch-size", type=int, default=256, help="frames per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--shard-size", type=int, default=500, help="videos per safetensors shard")
    parser.add_argument("--num-workers", type=int, default=0, help="decoding processes (0: decode in-process)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    counts = extract_features(
        args.model,
        args.videos,
        args.output,
        num_frames=args.num_frames,
        batch_size=args.batch_size,
        device=args.device,
        shard_size=args.shard_size,
        num_workers=args.num_workers,
    )
    print(json.dumps(counts))
    if counts["failed"]:
        print(f"{counts['failed']} video(s) could not be decoded: see {Path(args.output) / FAILED_NAME}")
    return 0
