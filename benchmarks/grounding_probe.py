"""How much temporal grounding a demo's frame features allow, measured without the language model.

A per-frame probe (an MLP) reads one frame's input plus the query (object colour and shape, event type,
one-hot) and says whether the frame lies inside the queried event; the predicted span runs from the first
to the last frame it accepts, scored with the grounding protocol's IoU on the held-out queries. Two inputs:

- `features`: the cached frame embedding (what PiTe's language model sees) and its change over +-5 frames;
- `ground truth`: the queried object's true visibility and centre and their change over +-5 frames.

The gap between the two is what the frozen vision tower loses, as far as this probe can read it (PiTe's
language model sees the same features and could bind query and frame better than an MLP does).

    python benchmarks/grounding_probe.py demo_output
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.neural_network import MLPClassifier

from modeling_pite.evaluation.grounding import grounding_iou
from modeling_pite.evaluation.jsonl import read_jsonl
from modeling_pite.feature_extraction import VideoFeatureStore

NUM_FRAMES = 100
MOTION_SPAN = 5  # frames either side for the change of the per-frame input


def _event_type(caption: str) -> str:
    """ "A red circle moves up." -> "moves up" (the world's captions start with article, colour, shape)."""
    return re.sub(r"^\w+ \w+ \w+ ", "", caption.lower()).rstrip(".")


def _with_motion(per_frame: np.ndarray) -> np.ndarray:
    padded = np.pad(per_frame, ((MOTION_SPAN, MOTION_SPAN), (0, 0)), mode="edge")
    return np.concatenate([per_frame, padded[2 * MOTION_SPAN :] - padded[: -2 * MOTION_SPAN]], axis=1)


def true_track(event: dict) -> np.ndarray:
    """`[N, 3]` visibility and mean keypoint centre of the event's first phrase (centre 0 where absent)."""
    trajectory = np.asarray(event["phrases"][0]["trajectory"], dtype=float)  # [P, N, 2], -1 = absent
    visible = (trajectory[..., 0] >= 0).any(0)
    points = np.where(trajectory >= 0, trajectory, 0.0).sum(0)
    counts = (trajectory[..., :1] >= 0).sum(0).clip(min=1)
    return np.concatenate([visible[:, None], points / counts], axis=1)


def probe_miou(
    train: list[dict], test: list[dict], frame_inputs: Callable[[dict, dict], np.ndarray], seed: int = 0
) -> float:
    """mIoU (x100) of the per-frame probe on `test`'s events, trained on `train`'s; `frame_inputs(video,
    event)` gives the `[N, D]` per-frame input."""
    words = sorted({w for r in train for e in r["events"] for w in e["caption"].lower().split()[1:3]})
    events = sorted({_event_type(e["caption"]) for r in train for e in r["events"]})
    times = np.arange(NUM_FRAMES) / NUM_FRAMES

    def rows(records: list[dict]):
        for video in records:
            for event in video["events"]:
                if not event["phrases"]:
                    continue
                query = np.zeros(len(words) + len(events))
                for word in event["caption"].lower().split()[1:3]:
                    if word in words:
                        query[words.index(word)] = 1.0
                if (kind := _event_type(event["caption"])) in events:
                    query[len(words) + events.index(kind)] = 1.0
                span = (event["start"] / video["duration"], event["end"] / video["duration"])
                inputs = np.concatenate(
                    [_with_motion(frame_inputs(video, event)), times[:, None], np.tile(query, (NUM_FRAMES, 1))], 1
                )
                yield inputs, (times + 0.5 / NUM_FRAMES >= span[0]) & (times <= span[1]), span

    train_rows = list(rows(train))
    probe = MLPClassifier(hidden_layer_sizes=(256,), max_iter=100, random_state=seed)
    probe.fit(np.concatenate([x for x, _, _ in train_rows]), np.concatenate([y for _, y, _ in train_rows]))
    ious = []
    for inputs, _, span in rows(test):
        inside = np.flatnonzero(probe.predict_proba(inputs)[:, 1] > 0.5)
        predicted = (inside[0] / NUM_FRAMES, (inside[-1] + 1) / NUM_FRAMES) if len(inside) else (0.0, 1.0)
        ious.append(grounding_iou(predicted, span))
    return round(100 * float(np.mean(ious)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_output", type=Path, help="a `pite demo --output-dir` folder")
    args = parser.parse_args()
    world = args.demo_output / "world"
    splits = [world / "stage2_ground_truth.jsonl", world / "test" / "stage2_ground_truth.jsonl"]
    if missing := [str(path) for path in splits if not path.is_file()]:
        parser.error(f"not a finished `pite demo` output: missing {', '.join(missing)}")
    train, test = (list(read_jsonl(path)) for path in splits)
    features = VideoFeatureStore(args.demo_output / "features")
    results = {
        "features": probe_miou(train, test, lambda video, _: features[video["id"]].float().numpy()),
        "ground truth": probe_miou(train, test, lambda _, event: true_track(event)),
    }
    print(json.dumps({"held-out grounding mIoU of a per-frame probe": results}, indent=2))


if __name__ == "__main__":
    main()
