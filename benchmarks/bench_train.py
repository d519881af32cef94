"""Training throughput from cached CLIP features vs. decoding + encoding every video, and trajectory-loss memory.

1. Samples/s of stage-2 training steps (collate + forward + backward + AdamW) when the collator reads
   `pite extract-features` caches, vs. the same steps decoding 100 frames per video with PyAV and running
   the CLIP tower each step (what a trainer without a cache does). Same model, data and batch; goal >= 10x.
   The tower here is a small CLIP (the real ViT-L/14 would make the uncached path slower still).
2. Peak memory of the stage-2 trajectory loss (forward + backward) at L=2048, P=3, N=100, hidden 4096:
   the model's masked loss, which runs the trajectory head only at positions holding a target, vs. the
   head run at every position (then masked). Each variant runs in a fresh process; peak = growth of the
   process's resident-set high-water mark during the loss.

Run: `python benchmarks/bench_train.py` (writes benchmarks/results/bench_train.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "bench_train.json"


def build_setup(folder: Path, num_videos: int, seconds: float):
    from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteProcessor, PiteVideoProcessor
    from modeling_pite.feature_extraction import VideoFeatureStore, extract_features
    from processing.stage_data import load_stage_dataset
    from processing.tokenizer import build_tokenizer
    from processing.video_writer import write_video

    config = PiteConfig.from_preset(
        "tiny",
        num_frames=100,
        vision_feature_dim=128,
        vision_config={
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 224,
            "patch_size": 32,
            "projection_dim": 128,
        },  # fmt: skip
        text_config={"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2},
    )
    torch.manual_seed(0)
    model = PiteForConditionalGeneration(config)
    captions = ["the red circle moves to the left.", "a blue square appears and moves up."]
    tokenizer = build_tokenizer(
        captions * 4 + ["A chat between USER: ASSISTANT: from to 0 1 2 3 4 5 6 7 8 9"], vocab_size=256
    )
    video_processor = PiteVideoProcessor(num_frames=config.num_frames)
    processor = PiteProcessor(video_processor=video_processor, tokenizer=tokenizer)
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    rng = np.random.default_rng(0)
    videos, records = folder / "videos", []
    fps = 30
    for i in range(num_videos):
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frames = (np.roll(base, 4 * t, axis=1) for t in range(int(seconds * fps)))
        write_video(videos / f"v{i}.mp4", frames, fps=fps)
        caption = captions[i % 2]
        phrase = caption.split(" moves")[0].split(" appears")[0]
        trajectory = rng.uniform(size=(3, config.num_frames, 2)).round(3).tolist()
        records.append({"id": f"v{i}", "video": f"v{i}.mp4", "duration": seconds, "events": [
            {"caption": caption, "start": 0.5, "end": seconds - 1, "phrases": [
                {"char_span": [0, len(phrase)], "trajectory": trajectory}]}]})  # fmt: skip
    (folder / "traj.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    started = time.perf_counter()
    extract_features(model_dir, videos, folder / "features")
    extraction_seconds = time.perf_counter() - started
    dataset = load_stage_dataset(2, [folder / "traj.jsonl"], media_folder=videos, num_frames=config.num_frames)
    return model, processor, dataset, VideoFeatureStore(folder / "features"), str(videos), extraction_seconds


def samples_per_second(model, collator, dataset, batch_size: int, steps: int) -> float:
    from modeling_pite.stages import StageArguments, prepare_stage_model

    torch.manual_seed(0)
    peft_model = prepare_stage_model(model, StageArguments(stage=2, lora_r=8, lora_alpha=16))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    batches = [[dataset[(s * batch_size + k) % len(dataset)] for k in range(batch_size)] for s in range(steps + 1)]
    elapsed = 0.0
    for step, records in enumerate(batches):
        started = time.perf_counter()
        batch = collator(records)
        batch.pop("num_skipped_videos")
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step warms up allocators and caches
            elapsed += time.perf_counter() - started
    peft_model.unload()  # leave the model without LoRA layers for the next run
    return steps * batch_size / elapsed


def throughput(args) -> dict:
    from processing.collators import PiteDataCollator

    with tempfile.TemporaryDirectory() as tmp:
        model, processor, dataset, store, video_root, extraction = build_setup(Path(tmp), args.videos, args.seconds)
        decoding = PiteDataCollator(processor, "trajectory")
        cached = PiteDataCollator(processor, "trajectory", feature_store=store, video_root=video_root)
        decoded_rate = samples_per_second(model, decoding, dataset, args.batch_size, args.steps)
        cached_rate = samples_per_second(model, cached, dataset, args.batch_size, args.steps)
    return {
        "config": {
            "num_frames": 100,
            "videos": args.videos,
            "video": f"{args.seconds:g} s, 30 fps, 320x240 h264",
            "batch_size": args.batch_size,
            "timed_steps": args.steps,
            "vision_tower": "CLIP hidden 256, 4 layers, 224 px, patch 32",
            "llm": "Llama hidden 256, 2 layers",
        },  # fmt: skip
        "decode_and_encode_samples_per_s": round(decoded_rate, 3),
        "cached_features_samples_per_s": round(cached_rate, 3),
        "speedup": round(cached_rate / decoded_rate, 2),
        "one_off_feature_extraction_s": round(extraction, 2),
    }


def trajectory_loss_peak(variant: str, length: int, hidden: int, batch: int, grounded: float) -> float:
    """Run in a fresh process: MiB the resident high-water mark grows during one loss forward + backward."""
    from modeling_pite import PiteConfig, PiteForConditionalGeneration

    torch.manual_seed(0)
    config = PiteConfig.from_preset(
        "tiny", num_frames=100, text_config={"hidden_size": hidden, "num_hidden_layers": 1, "intermediate_size": 8}
    )
    with torch.device("meta"):
        model = PiteForConditionalGeneration(config)
    model.trajectory_head = torch.nn.Linear(hidden, 3 * 100 * 2)
    hidden_states = torch.randn(batch, length, hidden, requires_grad=True)
    targets = torch.full((batch, length, 3, 100, 2), -1.0)
    rows = torch.rand(batch, length) < grounded
    targets[rows] = torch.rand(int(rows.sum()), 3, 100, 2)
    before = _peak_rss_kib()
    if variant == "where_needed":
        loss = model.coordinate_loss(model.trajectory_head, hidden_states, targets)
    else:  # the head at every position, then the same masked mean
        shifted = targets[:, 1:]
        valid = shifted != -1
        predictions = model.trajectory_head(hidden_states[:, :-1]).view_as(shifted)
        loss = ((predictions - shifted).abs() * valid).sum() / valid.sum()
    loss.backward()
    return (_peak_rss_kib() - before) / 1024


def _peak_rss_kib() -> int:
    """This process's resident-set high-water mark (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory(args) -> dict:
    results = {}
    for variant in ("where_needed", "everywhere"):
        command = [sys.executable, __file__, "--memory-variant", variant]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[variant] = float(output.strip().splitlines()[-1])
    return {
        "config": {
            "sequence_length": 2048,
            "points": 3,
            "frames": 100,
            "hidden": 4096,
            "batch": 4,
            "grounded_token_fraction": 0.05,
            "coord_loss_masked": True,
        },  # fmt: skip
        "peak_mib_head_where_needed": round(results["where_needed"], 1),
        "peak_mib_head_everywhere": round(results["everywhere"], 1),
        "memory_ratio": round(results["everywhere"] / max(results["where_needed"], 1e-3), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 keeps timings stable on a shared small CPU machine"
    )
    parser.add_argument("--memory-variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_variant:
        print(trajectory_loss_peak(args.memory_variant, length=2048, hidden=4096, batch=4, grounded=0.05))
        return
    results = {"throughput": throughput(args), "trajectory_loss_memory": memory(args)}
    results["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
