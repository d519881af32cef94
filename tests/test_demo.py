"""`pite demo` end to end on a reduced world (a few videos, a few steps): every phase runs and writes
sane outputs. The learning targets are the full demo's business (README), not this test's."""

import json
import math

import pytest
from PIL import Image

from modeling_pite.cli import main
from processing import demo

REDUCED = ["--num-train-videos", "6", "--num-test-videos", "2", "--stage1-steps", "2", "--stage2-steps", "2"]
REDUCED += ["--stage3-steps", "2", "--batch-size", "2", "--tower-steps", "20"]


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), *REDUCED]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert (out / "summary.md").read_text().count("|") > 20
    phases = summary["phases"]
    assert any(name.startswith("1.") for name in phases) and any(name.startswith("7.") for name in phases)
    assert all(seconds > 0 for seconds in phases.values())

    # the real annotation pipeline ran and is close to the world's ground truth
    annotation = summary["annotation vs ground truth"]
    assert annotation["videos"] >= 5 and annotation["phrase_recall"] > 50
    assert annotation["keypoint_error_px"] < 8

    results = summary["results"]
    for row in ("PiTe (stages 1+2+3)", "untrained (init)", "PiTe, another video's frames"):
        assert 0 <= results[row]["grounding"]["miou"] <= 100
        assert 0 <= results[row]["qa"]["exact_match"] <= 100
        assert results[row]["dense-captioning"]["num_videos"] == 2
        assert results[row]["grounding"]["num_items"] == results["random span"]["grounding"]["num_items"] > 0
        assert math.isfinite(results[row]["trajectory"]["l1"]) and results[row]["trajectory"]["l1"] > 0
    assert 0 < results["mean training trajectory"]["trajectory"]["l1"] < 1
    # "From 00 to 99" for every query: the IoU of (0, 0.99) with each event, rounded as the protocol does
    events = json.loads((out / "world" / "test" / "activitynet_captions.json").read_text()).values()
    ious = [
        round((min(end / video["duration"], 0.99) - start / video["duration"]) / max(end / video["duration"], 0.99), 2)
        for video in events
        for start, end in video["timestamps"]
    ]
    assert results["whole video"]["grounding"]["miou"] == pytest.approx(100 * sum(ious) / len(ious))
    assert results["majority answer"]["qa"]["exact_match"] > 0  # the training majority answer occurs in the test
    assert set(summary["targets"]) == {
        "grounding mIoU >= 2x random span",
        "QA >= majority + 20 points",
        "trajectory L1 < constant",
    }

    # pictures: training curves and trajectories over the 100 sampled test frames
    assert len(summary["images"]) == 3
    for path in summary["images"]:
        with Image.open(path) as image:
            if path.endswith(".gif"):  # the sampled frames (Pillow merges identical ones), at the video size
                assert image.n_frames > 50 and image.size == (64, 64)
            else:  # the curves, and the contact sheet of the 100 frames
                assert image.width > 100 and image.height > 50
    # the three stages were trained through accelerate and the final model answers through the pipeline
    for stage in (1, 2):
        assert (out / "stages" / f"stage{stage}" / "model.safetensors").is_file()
    assert (out / "final" / "config.json").is_file() and (out / "final" / "tokenizer.json").is_file()
    assert isinstance(summary["example answer"], str)


@pytest.mark.slow
def test_rerun_reuses_init_unless_the_model_or_world_changed(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(out), *REDUCED, "--stage3-steps", "1"]
    assert main(argv) == 0
    init_weights = out / "init" / "model.safetensors"
    built = init_weights.stat().st_mtime_ns
    assert main(argv) == 0
    assert init_weights.stat().st_mtime_ns == built  # same world, seed, tower steps and model: reused

    monkeypatch.setitem(demo.DEMO_MODEL_OVERRIDES["text_config"], "num_key_value_heads", 2)
    assert main(argv) == 0
    assert init_weights.stat().st_mtime_ns != built  # another model: init/ (and what starts from it) rebuilt
    assert json.loads((out / "final" / "config.json").read_text())["text_config"]["num_key_value_heads"] == 2

    # another world in the same folder (fewer videos): its annotations and init/ are redone, not refused
    rebuilt = init_weights.stat().st_mtime_ns
    assert main([*argv, "--num-train-videos", "5"]) == 0
    assert init_weights.stat().st_mtime_ns != rebuilt
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["num_train_videos"] == 5
    assert summary["annotation vs ground truth"]["videos"] <= 5
