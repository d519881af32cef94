"""Dense-captioning scoring time: METEOR's JVM started once per run vs. once per video.

500 synthetic videos (captions drawn from a small vocabulary, 3-5 events each, predictions with jittered
spans) are scored with the densevid_eval protocol + SODA_c. "once per run" is `pite evaluate`'s way: one
PTB tokenizer call and one METEOR JVM for everything. The baseline starts a fresh scorer (PTB call + METEOR
JVM) for every video, as a per-video loop around pycocoevalcap does. The baseline costs ~10 s per video
here, so by default it is timed on the first `--baseline-videos` videos and extrapolated linearly to all
of them (stated in the output); `--baseline-videos 500` times it in full. The per-video scores of both
ways are checked to be equal.

    python benchmarks/bench_eval.py [--videos 500] [--baseline-videos 10]

Writes benchmarks/results/bench_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from modeling_pite.evaluation.annotations import VideoCaptions
from modeling_pite.evaluation.caption_metrics import CaptionScorer
from modeling_pite.evaluation.dense_captioning import evaluate_dense_captions

VOCAB = [
    "a",
    "man",
    "woman",
    "dog",
    "child",
    "person",
    "ball",
    "car",
    "the",
    "is",
    "are",
    "runs",
    "walks",
    "jumps",
    "sits",
    "plays",
    "talks",
    "holds",
    "throws",
    "catches",
    "opens",
    "door",
    "table",
    "water",
    "field",
    "street",
    "park",
    "red",
    "blue",
    "small",
    "large",
    "quickly",
    "slowly",
    "into",
    "over",
    "under",
    "with",
]


def synthetic_dataset(num_videos: int, seed: int = 0) -> tuple[dict[str, VideoCaptions], dict[str, list[dict]]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(5, 12))).capitalize() + "."

    references, predictions = {}, {}
    for i in range(num_videos):
        duration = rng.uniform(30.0, 180.0)
        cuts = sorted(rng.uniform(0, duration) for _ in range(rng.randint(3, 5)))
        spans = [(max(0.0, c - rng.uniform(5, 30)), min(duration, c + rng.uniform(5, 30))) for c in cuts]
        vid = f"v_{i:05d}"
        references[vid] = VideoCaptions(vid, duration, spans, [sentence() for _ in spans])
        predictions[vid] = [
            {"sentence": sentence(), "timestamp": [s + rng.uniform(-5, 5), e + rng.uniform(-5, 5)]}
            for s, e in spans[: rng.randint(2, len(spans))]
        ]
    return references, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--baseline-videos", type=int, default=10, help="videos timed for the per-video baseline")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_eval.json")
    args = parser.parse_args()
    references, predictions = synthetic_dataset(args.videos)

    start = time.perf_counter()
    with CaptionScorer() as scorer:
        report, per_video = evaluate_dense_captions(predictions, references, scorer=scorer)
        jvm_starts = scorer.meteor_starts
    once_per_run = time.perf_counter() - start

    subset = list(references)[: min(args.baseline_videos, args.videos)]
    start = time.perf_counter()
    max_diff = 0.0
    for vid in subset:
        with CaptionScorer() as scorer:
            _, row = evaluate_dense_captions({vid: predictions[vid]}, {vid: references[vid]}, scorer=scorer)
        max_diff = max(max_diff, *(abs(row[vid][k] - per_video[vid][k]) for k in row[vid]))
    baseline_measured = time.perf_counter() - start
    baseline_total = baseline_measured / len(subset) * args.videos

    result = {
        "benchmark": "dense-captioning scoring (densevid_eval METEOR/CIDEr at 4 tIoUs + SODA_c)",
        "videos": args.videos,
        "events_per_video": "3-5 references, 2-5 predictions",
        "once_per_run_seconds": round(once_per_run, 2),
        "once_per_run_meteor_jvm_starts": jvm_starts,
        "per_video_baseline_measured_videos": len(subset),
        "per_video_baseline_measured_seconds": round(baseline_measured, 2),
        "per_video_baseline_seconds_for_all_videos": round(baseline_total, 2),
        "per_video_baseline_extrapolated": len(subset) < args.videos,
        "speedup_once_per_run_vs_per_video": round(baseline_total / once_per_run, 1),
        "max_abs_difference_per_video_scores": max_diff,
        "meteor": report["meteor"],
        "cider": report["cider"],
        "soda_c": report["soda_c"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
