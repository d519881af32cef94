"""The annotation pipeline: captions + videos -> PiTe stage-2 trajectory records, as resumable parquet shards.

Per event of a video: decode the event's frames (native rate, capped at `max_track_frames`; the span
of all events at once when it fits) with `modeling_pite.video_io.sample_video`; find noun phrases;
ground each on the event's first frame; pick up to `max_points` query points inside each mask; track all points of the event in one tracker
call; cluster each phrase's points into P keypoints with k-means++; report the keypoints at the N frames
PiTe samples from the whole video (`round(linspace(0, T - 1, N))`), `(-1, -1)` before the event's start,
after its end and wherever the keypoint is lost.

`run_annotation` splits the manifest into shards of `shard_size` videos, annotates them with
`num_workers` processes and writes each finished shard atomically (`data/shard-XXXXX.parquet`, via a
temporary file and `os.replace`) with its skip report beside it: a rerun after a crash finds the
finished shards and annotates only the rest, so the output equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from modeling_pite.video_io import VideoDecodeError, sample_frame_indices, sample_video

from .grounding import build_grounder
from .keypoints import keypoint_centres, keypoint_trajectories
from .phrases import NounPhrase, RuleBasedPhraseExtractor, SpacyPhraseExtractor
from .tracking import build_tracker

__all__ = ["RECORD_SCHEMA", "AnnotationConfig", "AnnotationResult", "Annotator", "run_annotation"]

STAGES = ("decode", "phrases", "grounding", "tracking", "keypoints")

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("duration", pa.float64()),
        (
            "events",
            pa.list_(
                pa.struct(
                    [
                        ("caption", pa.string()),
                        ("start", pa.float64()),
                        ("end", pa.float64()),
                        (
                            "phrases",
                            pa.list_(
                                pa.struct(
                                    [
                                        ("text", pa.string()),
                                        ("char_span", pa.list_(pa.int32())),
                                        ("trajectory", pa.list_(pa.list_(pa.list_(pa.float32())))),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)


@dataclass
class AnnotationConfig:
    """Every knob of the pipeline; `from_file` reads it from YAML/JSON, `to_dict` records it with the output."""

    phrase_backend: str = "rule"  # "rule" | "spacy"
    spacy_model: str = "en_core_web_sm"
    grounding_backend: str = "given"  # "given" | "color_shape" | "transformers"
    grounding_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. detector=, segmenter= local paths
    tracker: str = "lk"  # "lk" | "farneback" | a registered learned tracker
    tracker_kwargs: dict[str, Any] = field(default_factory=dict)
    num_frames: int = 100  # N: frames sampled over the whole video
    num_keypoints: int = 3  # P
    max_points: int = 64  # query points tracked per phrase
    min_mask_pixels: int = 20
    mask_erosion: int = 2  # pixels trimmed off the mask border: boundary points track the background
    max_track_frames: int = 600  # tracking frames per event (native rate up to this, evenly spaced above)
    short_side: int | None = 360  # frames larger than this are downscaled for tracking
    min_visible_fraction: float = 0.5
    seed: int = 0
    shard_size: int = 16

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AnnotationConfig:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown annotation config keys {sorted(unknown)}")
        return cls(**{**data, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AnnotationResult:
    record: dict[str, Any] | None  # None when nothing of the video could be annotated
    skipped: list[dict[str, Any]]  # {"id", "event", "phrase", "reason"}
    timings: dict[str, float]  # seconds per stage


def select_query_points(mask: np.ndarray, gray: np.ndarray, max_points: int, erosion: int = 2) -> np.ndarray:
    """Up to `max_points` pixel points `[M, 2]` inside `mask`: corners first (they track well), grid fill.

    The mask is eroded by `erosion` pixels when it survives that, so LK windows sit on the object.
    """
    if erosion > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erosion + 1, 2 * erosion + 1))
        eroded = cv2.erode(mask.astype(np.uint8), kernel)
        if eroded.sum() >= max(4, mask.sum() // 4):
            mask = eroded > 0
    area = int(mask.sum())
    spacing = max(2.0, np.sqrt(area / max_points))
    corners = cv2.goodFeaturesToTrack(
        gray, maxCorners=max_points, qualityLevel=0.01, minDistance=spacing * 0.7, mask=mask.astype(np.uint8)
    )
    points = corners.reshape(-1, 2) if corners is not None else np.zeros((0, 2), np.float32)
    if len(points) < max_points // 2:  # flat objects: a regular grid over the mask
        ys, xs = np.nonzero(mask)
        step = max(1, int(spacing))
        keep = (xs % step == xs.min() % step) & (ys % step == ys.min() % step)
        grid = np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32)
        if len(grid) > max_points - len(points):
            grid = grid[np.linspace(0, len(grid) - 1, max_points - len(points)).round().astype(int)]
        points = np.concatenate([points, grid])
    return np.ascontiguousarray(points[:max_points], dtype=np.float32)


def resample_to_video_frames(
    trajectory: np.ndarray, tracked_indices: np.ndarray, output_indices: np.ndarray
) -> np.ndarray:
    """`[P, K, 2]` keypoints at native frames `tracked_indices` -> `[P, N, 2]` at `output_indices`.

    Frames outside the tracked range are -1; frames between two tracked frames are interpolated
    linearly when the keypoint is visible at both, else -1.
    """
    num_keypoints = trajectory.shape[0]
    out = np.full((num_keypoints, len(output_indices), 2), -1.0, dtype=np.float32)
    inside = (output_indices >= tracked_indices[0]) & (output_indices <= tracked_indices[-1])
    for n in np.flatnonzero(inside):
        frame = output_indices[n]
        right = int(np.searchsorted(tracked_indices, frame))
        if tracked_indices[right] == frame:
            out[:, n] = trajectory[:, right]
            continue
        left = right - 1
        weight = (frame - tracked_indices[left]) / (tracked_indices[right] - tracked_indices[left])
        both = (trajectory[:, left, 0] >= 0) & (trajectory[:, right, 0] >= 0)
        out[both, n] = (1 - weight) * trajectory[both, left] + weight * trajectory[both, right]
    return out


class Annotator:
    """Runs the stages on one manifest item; holds the backends (built once per worker process)."""

    def __init__(self, config: AnnotationConfig):
        self.config = config
        if config.phrase_backend == "rule":
            self.phrases = RuleBasedPhraseExtractor()
        elif config.phrase_backend == "spacy":
            self.phrases = SpacyPhraseExtractor(config.spacy_model)
        else:
            raise ValueError(f"unknown phrase backend {config.phrase_backend!r}; use 'rule' or 'spacy'")
        self.grounder = build_grounder(config.grounding_backend, **config.grounding_kwargs)
        self.tracker = build_tracker(config.tracker, **config.tracker_kwargs)

    def _working_size(self, height: int, width: int) -> tuple[int, int] | None:
        short_side = self.config.short_side
        if short_side is None or min(height, width) <= short_side:
            return None
        scale = short_side / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, item: dict[str, Any]) -> AnnotationResult:
        timings = dict.fromkeys(STAGES, 0.0)
        skipped: list[dict[str, Any]] = []

        def skip(reason: str, event: int | None = None, phrase: str | None = None) -> None:
            skipped.append(
                {"id": item["id"], "video": item["video"], "event": event, "phrase": phrase, "reason": reason}
            )

        clock = time.perf_counter()
        try:  # a 1-frame thumbnail: reads the packet table for the frame count, size and duration
            _, probe = sample_video(item["video"], 1, size=(16, 16))
        except VideoDecodeError as error:
            skip(f"unreadable video: {error.cause}")
            return AnnotationResult(None, skipped, timings)
        timings["decode"] += time.perf_counter() - clock
        duration = float(item.get("duration") or probe.duration)
        output_indices = sample_frame_indices(probe.total_frames, self.config.num_frames)
        size = self._working_size(probe.height, probe.width)
        shared = None  # several events within max_track_frames: decode their span once, slice per event
        if len(item["events"]) > 1:
            start = min(event["start"] for event in item["events"])
            end = max(event["end"] for event in item["events"])
            fps = probe.fps or probe.total_frames / max(probe.duration, 1e-6)
            if (end - start) * fps + 1 <= self.config.max_track_frames:
                clock = time.perf_counter()
                try:
                    shared = self._decode(item["video"], probe, start, end, size)
                except VideoDecodeError:
                    shared = None  # each event then reports its own decoding problem
                timings["decode"] += time.perf_counter() - clock
        events = []
        for event_index, event in enumerate(item["events"]):
            annotated = self._event(item, event_index, event, probe, size, output_indices, timings, skip, shared)
            events.append(
                {"caption": event["caption"], "start": event["start"], "end": event["end"], "phrases": annotated}
            )
        if not any(event["phrases"] for event in events):
            return AnnotationResult(None, skipped, timings)
        record = {"id": item["id"], "video": item["video"], "duration": duration, "events": events}
        return AnnotationResult(record, skipped, timings)

    def _decode(self, path: str, probe, start: float, end: float, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames, native indices and times of `[start, end]` at the native rate (capped), without repeats."""
        fps = probe.fps or probe.total_frames / max(probe.duration, 1e-6)
        native = round((end - start) * fps) + 1
        frames, meta = sample_video(  # 1 ms of slack: frame times are floating point from the time base
            path,
            max(2, min(native, self.config.max_track_frames)),
            start=max(0.0, start - 1e-3),
            end=end + 1e-3,
            size=size,
        )
        indices, first = np.unique(np.asarray(meta.frame_indices), return_index=True)
        return frames[first], indices, np.asarray(meta.timestamps)[first]

    @staticmethod
    def _covers(times: np.ndarray, event: dict[str, Any]) -> bool:
        return int(((times >= event["start"] - 1e-3) & (times <= event["end"] + 1e-3)).sum()) >= 2

    def _event(
        self, item, event_index, event, probe, size, output_indices, timings, skip, shared
    ) -> list[dict[str, Any]]:
        config = self.config
        clock = time.perf_counter()
        if event.get("phrases"):
            phrases = [(NounPhrase(p["text"], tuple(p["char_span"])), p.get("mask")) for p in event["phrases"]]
        else:
            phrases = [(phrase, None) for phrase in self.phrases(event["caption"])]
        timings["phrases"] += time.perf_counter() - clock
        if not phrases:
            skip("no phrase found", event_index)
            return []

        clock = time.perf_counter()
        try:
            if shared is not None and self._covers(shared[2], event):
                keep = (shared[2] >= event["start"] - 1e-3) & (shared[2] <= event["end"] + 1e-3)
                frames, tracked_indices = shared[0][keep], shared[1][keep]
            else:
                frames, tracked_indices, _ = self._decode(item["video"], probe, event["start"], event["end"], size)
        except VideoDecodeError as error:
            skip(f"unreadable video: {error.cause}", event_index)
            return []
        timings["decode"] += time.perf_counter() - clock

        clock = time.perf_counter()
        gray = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        queries: list[tuple[NounPhrase, np.ndarray, np.ndarray]] = []
        for phrase, spec in phrases:
            try:
                mask = self.grounder(frames[0], phrase.text, spec, (probe.height, probe.width))
            except (ValueError, OSError) as error:
                skip(f"grounding failed: {error}", event_index, phrase.text)
                continue
            if int(mask.sum()) < config.min_mask_pixels:
                skip("empty mask", event_index, phrase.text)
                continue
            points = select_query_points(mask, gray, config.max_points, config.mask_erosion)
            if len(points) < config.num_keypoints:
                skip("empty mask", event_index, phrase.text)
                continue
            queries.append((phrase, points, mask))
        timings["grounding"] += time.perf_counter() - clock
        if not queries:
            return []

        clock = time.perf_counter()
        groups = np.concatenate([np.full(len(points), i) for i, (_, points, _) in enumerate(queries)])
        tracks = self.tracker(frames, np.concatenate([points for _, points, _ in queries]), groups)
        timings["tracking"] += time.perf_counter() - clock

        clock = time.perf_counter()
        annotated, offset = [], 0
        for phrase, points, mask in queries:
            members = slice(offset, offset + len(points))
            offset += len(points)
            centres = keypoint_centres(mask, config.num_keypoints, config.seed)
            keypoints = keypoint_trajectories(
                tracks.positions[:, members],
                tracks.visible[:, members],
                centres,
                frames.shape[1:3],
                config.min_visible_fraction,
            )
            trajectory = resample_to_video_frames(keypoints, tracked_indices, output_indices)
            if not (trajectory[..., 0] >= 0).any():
                skip("tracking lost", event_index, phrase.text)
                continue
            annotated.append(
                {"text": phrase.text, "char_span": list(phrase.char_span), "trajectory": trajectory.tolist()}
            )
        timings["keypoints"] += time.perf_counter() - clock
        return annotated


# --------------------------------------------------------------------------- sharded, resumable runs

_WORKER: Annotator | None = None


def _init_worker(config: dict[str, Any]) -> None:
    global _WORKER
    cv2.setNumThreads(1)  # one process per core does the parallelism
    _WORKER = Annotator(AnnotationConfig(**config))


def _annotate_in_worker(item: dict[str, Any]) -> AnnotationResult:
    return _WORKER(item)


def _fingerprint(items: Sequence[dict[str, Any]], config: AnnotationConfig) -> str:
    payload = json.dumps({"items": items, "config": config.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_atomic(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(temporary)
    os.replace(temporary, path)


def _write_shard(output_dir: Path, shard: int, results: list[AnnotationResult]) -> None:
    records = [result.record for result in results if result.record is not None]
    skipped = [entry for result in results for entry in result.skipped]
    timings = {stage: sum(result.timings[stage] for result in results) for stage in STAGES}
    name = f"shard-{shard:05d}"
    # the skip report first, the parquet last: the parquet's presence marks the shard done
    _write_atomic(
        output_dir / "reports" / f"{name}.json",
        lambda p: p.write_text(json.dumps({"skipped": skipped, "timings": timings, "videos": len(results)}, indent=1)),
    )
    table = pa.Table.from_pylist(records, schema=RECORD_SCHEMA)
    _write_atomic(output_dir / "data" / f"{name}.parquet", lambda p: pq.write_table(table, p))
    with (output_dir / "journal.jsonl").open("a") as journal:
        journal.write(
            json.dumps({"shard": shard, "records": len(records), "skipped": len(skipped), "time": time.time()}) + "\n"
        )


def run_annotation(
    items: Sequence[dict[str, Any]],
    output_dir: str | Path,
    config: AnnotationConfig | None = None,
    *,
    num_workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Annotate manifest `items` (see `manifest.read_manifest`) into `output_dir`; returns the summary.

    Output layout: `data/shard-XXXXX.parquet` (stage-2 records, `datasets.load_dataset("parquet",
    data_files=f"{output_dir}/data/*.parquet")`), `reports/shard-XXXXX.json` (skipped items with
    reasons, per-stage seconds), `skipped.jsonl` (all skips), `summary.json`, `journal.jsonl`.
    A rerun with the same items and config resumes; with different ones it refuses unless `overwrite`.
    """
    config = config or AnnotationConfig()
    output_dir = Path(output_dir)
    (output_dir / "data").mkdir(parents=True, exist_ok=True)
    (output_dir / "reports").mkdir(exist_ok=True)
    fingerprint = _fingerprint(items, config)
    state_path = output_dir / "annotation_state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state["fingerprint"] != fingerprint:
            if not overwrite:
                raise ValueError(
                    f"{output_dir} holds a run of a different manifest or config (state {state_path}); "
                    "use a new output folder or overwrite=True / --overwrite"
                )
            for stale in [
                *(output_dir / "data").glob("shard-*.parquet"),
                *(output_dir / "reports").glob("shard-*.json"),
            ]:
                stale.unlink()
    _write_atomic(
        state_path,
        lambda p: p.write_text(json.dumps({"fingerprint": fingerprint, "config": config.to_dict()}, indent=1)),
    )

    shards = [list(items[i : i + config.shard_size]) for i in range(0, len(items), config.shard_size)]
    done = {index for index in range(len(shards)) if (output_dir / "data" / f"shard-{index:05d}.parquet").exists()}
    pending = [index for index in range(len(shards)) if index not in done]
    work = [(index, item) for index in pending for item in shards[index]]
    bar = tqdm(
        total=len(items),
        initial=sum(len(shards[i]) for i in done),
        desc="annotate",
        unit="video",
        disable=not progress,
    )
    buffers: dict[int, list[AnnotationResult]] = defaultdict(list)
    for (index, _), result in zip(work, _results([item for _, item in work], config, num_workers)):
        buffers[index].append(result)
        bar.update(1)
        if len(buffers[index]) == len(shards[index]):
            _write_shard(output_dir, index, buffers.pop(index))
    bar.close()
    return summarize(output_dir)


def _results(items: list[dict[str, Any]], config: AnnotationConfig, num_workers: int) -> Iterator[AnnotationResult]:
    if num_workers <= 1 or len(items) <= 1:
        annotator = Annotator(config)
        for item in items:
            yield annotator(item)
        return
    # not fork: OpenCV's thread pool in a forked child of a process that already used it can hang. The
    # forkserver imports this module once and forks the workers from that clean process, so each worker
    # starts without re-importing transformers (spawn does, many seconds per worker).
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, initializer=_init_worker, initargs=(config.to_dict(),)) as pool:
        yield from pool.imap(_annotate_in_worker, items)


def summarize(output_dir: str | Path) -> dict[str, Any]:
    """Merge the shard reports into `skipped.jsonl` and `summary.json` (counts, reasons, stage seconds)."""
    output_dir = Path(output_dir)
    skipped, timings, videos = [], dict.fromkeys(STAGES, 0.0), 0
    for report_path in sorted((output_dir / "reports").glob("shard-*.json")):
        report = json.loads(report_path.read_text())
        skipped += report["skipped"]
        videos += report["videos"]
        for stage in STAGES:
            timings[stage] += report["timings"][stage]
    records = sum(pq.ParquetFile(p).metadata.num_rows for p in sorted((output_dir / "data").glob("shard-*.parquet")))
    reasons: dict[str, int] = defaultdict(int)
    for entry in skipped:
        reasons[entry["reason"].split(":")[0]] += 1
    summary = {
        "videos": videos,
        "records": records,
        "skipped": len(skipped),
        "skip_reasons": dict(reasons),
        "stage_seconds": timings,
    }
    _write_atomic(output_dir / "skipped.jsonl", lambda p: p.write_text("".join(json.dumps(e) + "\n" for e in skipped)))
    _write_atomic(output_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    return summary
