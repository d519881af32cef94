"""How much grounding the demo's language model learns when the frame features are perfect.

`grounding_probe.py` asks what the frozen tower's features allow without the language model; this asks the
converse. A finished demo's world and `init/` are copied to a new folder, every frame's cached feature is
replaced by the world's ground truth in the layout the tower is pretrained to encode (per object name of
`OBJECT_NAMES`: visible share of the object, centre x, centre y; zero where absent), and `run_demo` trains
stages 1-3 and evaluates on it. Grounding the model still misses then is missed by the language model and
its training, not by the tower.

    python benchmarks/grounding_oracle.py demo_output oracle_output
    python benchmarks/grounding_oracle.py demo_output oracle_output --stage3-seed 1   # retrains stage 3 only
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from modeling_pite.feature_extraction import INDEX_NAME
from processing.demo import INIT_KEY, DemoConfig, init_key, run_demo
from processing.synthetic import load_world
from processing.synthetic.vision_pretraining import OBJECT_NAMES
from processing.synthetic.world import VideoSpec, pixels_to_normalized

# the values lie in [0, 1] and are mostly zero (std ~0.2); x5 brings their spread to the order of the
# tower's features (std ~2.3) that stage 1 trained the adapter on
ORACLE_SCALE = 5.0
SHARD_NAME = "features-00000.safetensors"
MARKER = "oracle_features.json"  # marks an oracle run's folder (extract_features rewrites the cache's index)


def oracle_features(spec: VideoSpec, num_frames: int, dim: int) -> np.ndarray:
    """`[num_frames, dim]`: at each sampled frame, each object name's visible share and normalised centre."""
    names = len(OBJECT_NAMES)
    if dim < 3 * names:
        raise ValueError(f"the oracle layout needs {3 * names} feature dimensions, the cache has {dim}")
    times = spec.sampled_frame_times(num_frames)
    features = np.zeros((num_frames, dim), dtype=np.float32)
    for index, obj in enumerate(spec.objects):
        slot = OBJECT_NAMES.index(obj.name)
        share = spec.visible_area(index, times) / obj.mask.sum()
        centre = pixels_to_normalized(obj.center(times), spec.width, spec.height)
        features[:, slot] = share
        features[:, names + 2 * slot : names + 2 * slot + 2] = np.where(share[:, None] > 0, centre, 0.0)
    return ORACLE_SCALE * features


def write_oracle_cache(demo_output: Path, output_dir: Path) -> int:
    """Copy the demo's world and `init/`, and write the oracle feature cache in its place; returns #videos."""
    for folder in ("world", "init"):
        shutil.copytree(demo_output / folder, output_dir / folder, dirs_exist_ok=True)
    metadata = json.loads((demo_output / "features" / INDEX_NAME).read_text())["metadata"]
    world = load_world(output_dir / "world")
    tensors = {
        video_id: torch.from_numpy(oracle_features(spec, metadata["num_frames"], metadata["feature_dim"])).half()
        for video_id, spec in world.videos.items()
    }
    features = output_dir / "features"
    shutil.rmtree(features, ignore_errors=True)
    features.mkdir(parents=True)
    save_file(tensors, str(features / SHARD_NAME))
    index = {"metadata": {**metadata, "model": "ground truth"}, "weight_map": dict.fromkeys(tensors, SHARD_NAME)}
    (features / INDEX_NAME).write_text(json.dumps(index, indent=2))
    (output_dir / MARKER).write_text(json.dumps({"scale": ORACLE_SCALE, "names": OBJECT_NAMES}))
    return len(tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_output", type=Path, help="a finished `pite demo --output-dir` folder")
    parser.add_argument(
        "output_dir", type=Path, help="where the oracle run goes (a new folder, or an earlier oracle run's)"
    )
    parser.add_argument("--stage3-seed", type=int, help="stage 3's training seed (default: the demo's seed)")
    args = parser.parse_args()
    needed = [args.demo_output / name for name in ("summary.json", "world/world.json", f"init/{INIT_KEY}",
                                                   f"features/{INDEX_NAME}")]  # fmt: skip
    if missing := [str(path) for path in needed if not path.exists()]:
        parser.error(f"not a finished `pite demo` output: missing {', '.join(missing)}")
    if args.output_dir.resolve() == args.demo_output.resolve():
        parser.error("output_dir must differ from demo_output: the oracle replaces the feature cache")
    if (args.output_dir / "features").exists() and not (args.output_dir / MARKER).is_file():
        # the stages there were trained on the tower's features, and a rerun would reuse them
        parser.error(f"{args.output_dir} holds a demo run on the tower's features; use a new folder")
    demo = json.loads((args.demo_output / "summary.json").read_text())["config"]
    settings = ("num_train_videos", "num_test_videos", "seed", "tower_steps", "stage1_steps", "stage2_steps",
                "stage3_steps")  # fmt: skip
    config = DemoConfig(
        output_dir=str(args.output_dir),
        **{key: demo[key] for key in settings},
        stage_overrides={3: ["--seed", str(args.stage3_seed)]} if args.stage3_seed is not None else {},
    )
    # a stale init/ would make run_demo rebuild it, and replace the oracle cache with the tower's features
    if json.loads((args.demo_output / "init" / INIT_KEY).read_text()) != init_key(args.demo_output / "world", config):
        parser.error(f"{args.demo_output}/init was built for another model or world: run_demo would rebuild it "
                     "and replace the oracle cache with the tower's features; rerun the demo first")  # fmt: skip
    print(f"oracle features for {write_oracle_cache(args.demo_output, args.output_dir)} videos", flush=True)
    run_demo(config)


if __name__ == "__main__":
    main()
