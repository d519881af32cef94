"""`video-qa` pipeline costs: noun-phrase trajectories on vs. off, and batched vs. one-by-one calls.

1. `return_trajectories=True` adds one forward over prompt + answer to read the trajectory head at the answer's
   tokens; the ratio to the same call without trajectories is its price (baseline: no trajectories).
2. Videos/s with `batch_size=B` vs. calling the pipeline once per video (baseline: one-by-one), same answers.

A small random PiTe (hidden 256, 4 layers, 100 frames of 32 px) and synthetic 2 s clips; every call writes
exactly `--new-tokens` tokens (min = max), so the runs compare equal work.

    python benchmarks/bench_pipeline.py [--videos 6] [--batch-size 3] [--new-tokens 32] [--repeats 2] [--threads 1]

Writes benchmarks/results/bench_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

import modeling_pite  # noqa: F401  (registers the pipelines)
from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor
from processing.tokenizer import build_tokenizer
from processing.video_writer import write_video

CORPUS = ["What is the red circle doing? the red circle moves to the left, from 12 to 40. USER: ASSISTANT:"]


def build_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    config = PiteConfig.from_preset(
        "tiny",
        num_frames=100,
        text_config={"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
                     "num_key_value_heads": 8},
    )  # fmt: skip
    model = PiteForConditionalGeneration(config)
    model.generation_config.do_sample = False
    video_processor = PiteVideoProcessor(
        num_frames=100, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    model.save_pretrained(folder)
    PiteProcessor(video_processor, build_tokenizer(CORPUS, vocab_size=256)).save_pretrained(folder)
    return folder


def write_clips(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        frames = [np.full((48, 64, 3), (index * 40 + t * 3) % 256, np.uint8) for t in range(50)]
        paths.append(str(write_video(folder / f"clip{index}.mp4", frames, fps=25)))
    return paths


def timed(function, repeats: int) -> tuple[float, float, object]:
    """Best wall and best process-CPU seconds of `repeats` runs (after a warm-up run), and the last result.

    CPU time is reported too because wall time on a shared machine mostly measures the neighbours.
    """
    result = function()
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_checkpoint(Path(tmp) / "pite-small")
        videos = write_clips(Path(tmp), args.videos)
        qa = pipeline("video-qa", model=str(folder))
        generation = dict(question="What is the red circle doing?", max_new_tokens=args.new_tokens,
                          min_new_tokens=args.new_tokens)  # fmt: skip

        plain = timed(lambda: qa(videos[0], **generation), args.repeats)
        with_trajectories = timed(lambda: qa(videos[0], return_trajectories=True, **generation), args.repeats)
        singles = timed(lambda: [qa(video, **generation) for video in videos], args.repeats)
        batched = timed(lambda: qa(videos, batch_size=args.batch_size, **generation), args.repeats)

    results = {
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "setup": vars(args) | {"hidden_size": 256, "layers": 4, "num_frames": 100},
        "trajectories": {
            "baseline_without_wall_s": plain[0],
            "with_trajectories_wall_s": with_trajectories[0],
            "cost_ratio_wall": with_trajectories[0] / plain[0],
            "cost_ratio_cpu": with_trajectories[1] / plain[1],
        },
        "batching": {
            "baseline_one_by_one_videos_per_s": args.videos / singles[0],
            "batched_videos_per_s": args.videos / batched[0],
            "speedup_wall": singles[0] / batched[0],
            "speedup_cpu": singles[1] / batched[1],
            "same_answers": [o["answer"] for o in singles[2]] == [o["answer"] for o in batched[2]],
        },
    }
    print(json.dumps(results, indent=2))
    output = Path(__file__).parent / "results" / "bench_pipeline.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
