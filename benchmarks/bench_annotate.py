"""Annotation throughput: videos per minute on 2 cores, and where the time goes.

Synthetic 320x180 videos of 100 frames (10 s at 10 fps, 2-3 textured moving shapes, one caption per
object) are annotated with the default backends (rule-based phrases, Lucas-Kanade tracker) and the
colour/shape grounder the synthetic world needs. Reported:

- videos/minute with 1 and with 2 worker processes (wall clock of `run_annotation`); the first 2-worker
  run also starts the forkserver (one import of the package), reported separately as the cold start;
- the 2-worker speed-up, and how much longer the stages took per video with 2 workers (CPU contention);
- seconds per stage summed over all videos (`summary.json`'s `stage_seconds`), their shares, and the
  share of the run not in any stage (Python glue, parquet writing, process start-up).

Goal: the tracker, not Python overhead, is the dominant cost.

Run: `python benchmarks/bench_annotate.py [--videos 16]` (writes benchmarks/results/bench_annotate.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from processing.annotation import AnnotationConfig, run_annotation
from processing.synthetic.sampling import sample_video_spec
from processing.video_writer import write_video

RESULTS = Path(__file__).parent / "results" / "bench_annotate.json"


def make_manifest(folder: Path, num_videos: int) -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    for video in range(num_videos):
        spec = sample_video_spec(
            rng, f"video{video:03d}", width=320, height=180, fps=10.0, duration_range=(10.0, 10.0), num_objects=(2, 3)
        )
        path = write_video(folder / f"{spec.video_id}.mp4", spec.frames(), fps=spec.fps)
        events = []
        for index, obj in enumerate(spec.objects):  # from when the object is well in view until it is gone
            in_view = [t for t in spec.frame_times if spec.object_mask(index, t).sum() >= 0.6 * obj.mask.sum()]
            if in_view:
                end = min(obj.disappear, spec.duration)
                events.append({"caption": f"The {obj.name} moves.", "start": float(in_view[0]), "end": end})
        items.append({"id": spec.video_id, "video": str(path), "events": events})
    return items


def run(items: list[dict], output_dir: Path, num_workers: int) -> dict:
    config = AnnotationConfig(grounding_backend="color_shape")
    start = time.perf_counter()
    summary = run_annotation(items, output_dir, config, num_workers=num_workers, progress=False)
    wall = time.perf_counter() - start
    stages = summary["stage_seconds"]
    busy = sum(stages.values())
    return {
        "num_workers": num_workers,
        "wall_seconds": round(wall, 2),
        "videos_per_minute": round(len(items) / wall * 60, 1),
        "records": summary["records"],
        "skip_reasons": summary["skip_reasons"],
        "stage_seconds": {name: round(value, 3) for name, value in stages.items()},
        "stage_share": {name: round(value / busy, 3) for name, value in stages.items()},
        # time of the run (per worker) outside the stages: glue, writing shards, starting workers
        "overhead_share": round(max(0.0, 1 - busy / (wall * num_workers)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = make_manifest(folder / "videos", args.videos)
        one = run(items, folder / "one", 1)
        cold = run(items, folder / "two-cold", 2)  # includes starting the forkserver (imports the package)
        two = run(items, folder / "two", 2)  # the forkserver is up: worker start-up is a fork
    result = {
        "setup": f"{args.videos} synthetic videos, 320x180, 100 frames; rule phrases, color_shape grounding, LK tracker",
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "one_worker": one,
        "two_workers_cold_start": {key: cold[key] for key in ("wall_seconds", "videos_per_minute", "overhead_share")},
        "two_workers": two,
        "speedup_two_workers": round(two["videos_per_minute"] / one["videos_per_minute"], 2),
        # > 1 means the two workers competed for CPU (other processes on the machine): see load_average
        "stage_seconds_ratio_two_vs_one": round(
            sum(two["stage_seconds"].values()) / sum(one["stage_seconds"].values()), 2
        ),
        "dominant_stage": max(one["stage_seconds"], key=one["stage_seconds"].get),
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
