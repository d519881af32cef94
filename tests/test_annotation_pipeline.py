"""End-to-end annotation: accuracy on the synthetic world, resumability, skip reports, bikes.mp4, the CLI."""

from pathlib import Path

import numpy as np
import pytest

from modeling_pite.video_io import sample_video
from processing.annotation import AnnotationConfig, Annotator
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


@pytest.mark.slow
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
