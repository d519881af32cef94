"""Cached generation vs. the original release's uncached recompute, and what the two coordinate heads cost.

1. Tokens/s of greedy generation, 64 new tokens after a prompt holding 100 video tokens: `generate()` with
   the KV cache (the video goes through the CLIP tower once, at prefill) vs. the original release's loop,
   which re-ran the whole sequence every token, the video included (pixel values through the CLIP tower,
   `use_cache=False`, every head over every position). Both paths must give the same tokens (asserted).
   Goal: cached >= 5x uncached.
2. Step time (forward + backward) of a stage-2 training step, labels + trajectory targets on a few answer
   tokens, vs. the same model and batch with neither coordinate head run (the decoder + `lm_head` +
   the model's own cross-entropy, labels only). Goal: the heads add <= 3%. Also timed: a labels-only
   `forward`, which still returns `localizations` / `trajectories` for every position.
3. The cost of those full-sequence `trajectories` at a realistic size (L=2048, hidden 4096, P=3, N=100):
   time and size of the head's output over every position, next to a 7B training step's FLOPs.

Model: Llama decoder hidden 512 x 4 layers (intermediate 1376, 8 heads, vocab 32000), CLIP tower 2 layers
x hidden 192, 64 px frames, patch 16 (17 tokens a frame), 100 frames per video: sized for 2 CPU cores. Timings interleave the variants and report
medians of wall time and of process CPU time, because the machine may be shared (the load average is
recorded; on an oversubscribed machine two torch threads wait on each other and wall time varies several
fold), plus the minimum, and the matmul FLOPs of each training variant (`FlopCounterMode`), which no load
changes.

Run: `python benchmarks/bench_generate.py` (writes benchmarks/results/bench_generate.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_pite import PiteConfig, PiteForConditionalGeneration

RESULTS = Path(__file__).parent / "results" / "bench_generate.json"
NUM_FRAMES = 100
VIDEO = 3  # the tiny preset's <video> id


def build_model() -> PiteForConditionalGeneration:
    config = PiteConfig.from_preset(
        "tiny",
        num_frames=NUM_FRAMES,
        vision_feature_dim=128,
        vision_config={
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 2,
            "num_attention_heads": 3,
            "image_size": 64,
            "patch_size": 16,
            "projection_dim": 128,
        },  # fmt: skip
        text_config={
            "vocab_size": 32000,
            "hidden_size": 512,
            "intermediate_size": 1376,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "max_position_embeddings": 1024,
        },  # fmt: skip
    )
    torch.manual_seed(0)
    return PiteForConditionalGeneration(config)


def prompt(batch_size: int, text_before: int, text_after: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    before = torch.randint(4, 32000, (batch_size, text_before), generator=generator)
    after = torch.randint(4, 32000, (batch_size, text_after), generator=generator)
    video = torch.full((batch_size, NUM_FRAMES), VIDEO)
    return torch.cat([torch.ones(batch_size, 1, dtype=torch.long), before, video, after], dim=1)


@torch.no_grad()
def uncached_greedy(model, input_ids, pixel_values_videos, max_new_tokens: int) -> torch.Tensor:
    """The original release's decoding: the full sequence, video encoding included, at every new token."""
    suppressed = [VIDEO, model.generation_config.eos_token_id]  # as generate() with min_new_tokens
    for _ in range(max_new_tokens):
        logits = model(input_ids=input_ids, pixel_values_videos=pixel_values_videos, use_cache=False).logits[:, -1]
        logits[:, suppressed] = float("-inf")
        input_ids = torch.cat([input_ids, logits.argmax(-1, keepdim=True)], dim=1)
    return input_ids


def bench_generation(model, new_tokens: int, repeats: int) -> dict:
    model.eval()
    input_ids = prompt(1, 8, 12)
    pixel_values_videos = torch.randn(1, NUM_FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def cached():
        return model.generate(input_ids=input_ids, pixel_values_videos=pixel_values_videos, do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens)  # fmt: skip

    def uncached():
        return uncached_greedy(model, input_ids, pixel_values_videos, new_tokens)

    cached_tokens = cached()  # warm-up
    start = time.perf_counter()
    uncached_tokens = uncached()  # the slow path runs once: timed and checked
    uncached_seconds = time.perf_counter() - start
    assert cached_tokens.shape[1] == input_ids.shape[1] + new_tokens
    assert torch.equal(cached_tokens, uncached_tokens), "cached and uncached greedy tokens differ"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_tokens = cached()
        times.append(time.perf_counter() - start)
        assert torch.equal(run_tokens, cached_tokens)
    seconds = {"cached": statistics.median(times), "uncached": uncached_seconds}
    return {
        "prompt_tokens": input_ids.shape[1],
        "video_tokens": NUM_FRAMES,
        "new_tokens": new_tokens,
        "cached_repeats": repeats,
        "uncached_repeats": 1,
        "cached_seconds": seconds["cached"],
        "uncached_seconds": seconds["uncached"],
        "cached_tokens_per_s": new_tokens / seconds["cached"],
        "uncached_tokens_per_s": new_tokens / seconds["uncached"],
        "speedup": seconds["uncached"] / seconds["cached"],
        "same_tokens": True,
    }


def training_batch(model, batch_size: int = 1, answer: int = 48, targets: int = 6) -> dict:
    """Cached-feature stage-2 batch: labels on the answer, trajectories on `targets` answer tokens per row."""
    input_ids = prompt(batch_size, 8, 12 + answer, seed=2)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer:] = input_ids[:, -answer:]
    trajectory_targets = torch.full((*input_ids.shape, model.config.num_trajectory_points, NUM_FRAMES, 2), -1.0)
    trajectory_targets[:, -targets:] = torch.rand(batch_size, targets, model.config.num_trajectory_points,
                                                  NUM_FRAMES, 2, generator=torch.Generator().manual_seed(3))  # fmt: skip
    video_features = torch.randn(batch_size, NUM_FRAMES, model.config.vision_feature_dim)
    return {"input_ids": input_ids, "video_features": video_features, "labels": labels,
            "trajectory_targets": trajectory_targets}  # fmt: skip


def bench_training(model, repeats: int) -> dict:
    model.train()
    batch = training_batch(model)
    lm_only = {name: batch[name] for name in ("input_ids", "video_features", "labels")}

    def step_with_heads():
        model(**batch).loss.backward()

    def step_labels_forward():
        model(**lm_only).loss.backward()

    def step_without_heads():
        # the same model with neither coordinate head run: decoder + lm_head + the model's own loss
        hidden = model.model(input_ids=batch["input_ids"], video_features=batch["video_features"]).last_hidden_state
        logits = model.lm_head(hidden)
        model.loss_function(
            logits=logits, labels=batch["labels"], vocab_size=model.config.text_config.vocab_size
        ).backward()

    variants = {"with_heads": step_with_heads, "labels_only_forward": step_labels_forward,
                "without_heads": step_without_heads}  # fmt: skip
    wall, cpu = ({name: [] for name in variants} for _ in range(2))
    for run in variants.values():  # warm-up
        run()
    names = list(variants)
    for round_ in range(repeats):
        for name in names[round_ % 3 :] + names[: round_ % 3]:  # rotate the order: no variant always goes first
            model.zero_grad(set_to_none=True)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    seconds = {name: statistics.median(values) for name, values in wall.items()}
    cpu_seconds = {name: statistics.median(values) for name, values in cpu.items()}
    min_seconds = {name: min(values) for name, values in wall.items()}
    flops = {}
    for name, run in variants.items():  # matmul FLOPs: the load-independent ratio
        with FlopCounterMode(display=False) as counter:
            run()
        flops[name] = counter.get_total_flops()
    model.zero_grad(set_to_none=True)

    def overhead(times: dict, name: str) -> float:
        return 100 * (times[name] / times["without_heads"] - 1)

    return {
        "batch_size": batch["input_ids"].shape[0],
        "sequence_length": batch["input_ids"].shape[1],
        "trajectory_target_positions_per_row": 6,
        "repeats": repeats,
        "wall_seconds": seconds,
        "process_cpu_seconds": cpu_seconds,
        "min_wall_seconds": min_seconds,
        "matmul_flops": flops,
        "heads_overhead_percent": overhead(seconds, "with_heads"),
        "heads_overhead_percent_cpu_time": overhead(cpu_seconds, "with_heads"),
        "heads_overhead_percent_min_wall": overhead(min_seconds, "with_heads"),
        "heads_overhead_percent_flops": overhead(flops, "with_heads"),
        "labels_only_forward_overhead_percent": overhead(seconds, "labels_only_forward"),
        "labels_only_forward_overhead_percent_cpu_time": overhead(cpu_seconds, "labels_only_forward"),
        "labels_only_forward_overhead_percent_flops": overhead(flops, "labels_only_forward"),
        "all_wall_seconds": wall,
    }


def bench_full_trajectories(length: int = 2048, hidden: int = 4096, repeats: int = 5) -> dict:
    """The trajectory head over every position at a 7B-like size, as `forward` returns it."""
    outputs = 3 * NUM_FRAMES * 2
    head = torch.nn.Linear(hidden, outputs)
    hidden_states = torch.randn(1, length, hidden, requires_grad=True)
    head(hidden_states)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head(hidden_states)
        times.append(time.perf_counter() - start)
    flops = 2 * length * hidden * outputs
    step_flops_7b = 6 * 6.7e9 * length  # forward + backward of a 6.7B-parameter decoder over `length` tokens
    return {
        "length": length,
        "hidden_size": hidden,
        "seconds": statistics.median(times),
        "gflops": flops / 1e9,
        "share_of_7b_training_step_flops_percent": 100 * flops / step_flops_7b,
        "output_mb_fp32": length * outputs * 4 / 2**20,
        "logits_mb_fp32_for_comparison": length * 32001 * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--generation-repeats", type=int, default=3)
    parser.add_argument("--training-repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    model = build_model()
    generation = bench_generation(model, args.new_tokens, args.generation_repeats)
    training = bench_training(model, args.training_repeats)
    full_trajectories = bench_full_trajectories()
    results = {
        "model": "Llama 512 x 4 layers (vocab 32000) + CLIP 192 x 2 layers, 64 px, patch 16, 100 frames",
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "generation": generation,
        "training_step": training,
        "full_sequence_trajectories_at_2048x4096": full_trajectories,
        "goals": {
            "cached_at_least_5x_uncached": generation["speedup"] >= 5,
            "heads_add_at_most_3_percent_flops": training["heads_overhead_percent_flops"] <= 3,
            "heads_add_at_most_3_percent_wall": training["heads_overhead_percent"] <= 3,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    print(f"load average {load_before[0]:.1f} -> {results['load_average_after'][0]:.1f}, {args.threads} torch threads")
    print(f"{f'generation, {args.new_tokens} new tokens':<44}{'s':>9}{'tokens/s':>11}")
    for name in ("cached", "uncached"):
        print(f"  {name:<42}{generation[f'{name}_seconds']:>9.2f}{generation[f'{name}_tokens_per_s']:>11.1f}")
    print(f"  speedup {generation['speedup']:.1f}x (goal >= 5x), same greedy tokens: yes")
    print(
        f"{'training step (forward + backward)':<36}{'wall s':>8}{'min s':>8}{'cpu s':>8}{'GFLOP':>8}{'vs none (wall/min/cpu/FLOP)':>32}"
    )
    columns = [training[key] for key in ("wall_seconds", "min_wall_seconds", "process_cpu_seconds", "matmul_flops")]
    for name in training["wall_seconds"]:
        values = [column[name] for column in columns]
        ratios = "/".join(f"{100 * (column[name] / column['without_heads'] - 1):+.1f}" for column in columns)
        print(f"  {name:<34}{values[0]:>8.3f}{values[1]:>8.3f}{values[2]:>8.3f}{values[3] / 1e9:>8.1f}{ratios:>31}%")
    print(f"  heads add {training['heads_overhead_percent_flops']:+.2f}% of the matmul FLOPs, "
          f"{training['heads_overhead_percent']:+.1f}% median wall time (goal <= 3%)")  # fmt: skip
    print(f"trajectory head over all 2048 positions at hidden 4096: {full_trajectories['seconds']:.3f} s, "
          f"{full_trajectories['output_mb_fp32']:.1f} MB, "
          f"{full_trajectories['share_of_7b_training_step_flops_percent']:.3f}% of a 7B step's FLOPs")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
