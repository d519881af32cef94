"""benchmarks/grounding_probe.py: the per-frame probe finds spans its inputs show and not ones they hide."""

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "grounding_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "grounding_probe.py"
)
grounding_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grounding_probe)


def appearance_videos(count: int, seed: int) -> list[dict]:
    """Videos of one event each, "A red circle appears.", spanning exactly the frames it is visible."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(count):
        start, end = sorted(rng.choice(np.arange(5, 96), size=2, replace=False).tolist())
        trajectory = np.full((3, 100, 2), -1.0)
        trajectory[:, start:end] = 0.5
        event = {"caption": "A red circle appears.", "start": start / 10, "end": end / 10,
                 "phrases": [{"text": "A red circle", "trajectory": trajectory.tolist()}]}  # fmt: skip
        videos.append({"id": f"v{i}", "duration": 10.0, "events": [event]})
    return videos


def test_probe_reads_spans_off_true_tracks_and_not_off_blank_frames():
    train, test = appearance_videos(40, seed=0), appearance_videos(10, seed=1)
    track = grounding_probe.probe_miou(train, test, lambda _, event: grounding_probe.true_track(event))
    blank = grounding_probe.probe_miou(train, test, lambda _, event: np.zeros((100, 1)))
    assert track > 80 and blank < 60, (track, blank)
    event = train[0]["events"][0]
    visible = grounding_probe.true_track(event)
    assert visible.shape == (100, 3) and visible[:, 0].sum() == round((event["end"] - event["start"]) * 10)
