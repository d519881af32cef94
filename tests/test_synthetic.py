import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling_pite.evaluation.annotations import load_activitynet_captions, load_video_qa
from modeling_pite.evaluation.dense_captioning import parse_dense_captions
from modeling_pite.temporal import parse_frame_span, seconds_to_frame_index
from modeling_pite.video_io import sample_video
from processing.instruction_data import load_instruction_data
from processing.localized_narratives import load_localized_narratives, word_points
from processing.synthetic import (
    ObjectSpec,
    VideoSpec,
    generate_world,
    load_world,
    normalized_to_pixels,
    pixels_to_normalized,
    sample_video_spec,
    video_events,
)
from processing.trajectory_data import load_trajectory_data
from processing.video_writer import write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), 4, 2, seed=3, progress=False)


def _crossing_spec() -> VideoSpec:
    """A red square sits still; a blue circle drawn above it passes over it and leaves to the right."""
    below = ObjectSpec("red", "square", 16, [(0.0, 20.0, 32.0), (4.0, 20.0, 32.0)], texture_seed=1)
    above = ObjectSpec("blue", "circle", 16, [(1.0, 0.0, 32.0), (3.0, 90.0, 32.0)], texture_seed=2)
    return VideoSpec("crossing", 64, 64, 10.0, 40, background_seed=0, objects=[below, above])


def test_same_seed_same_bytes(world, tmp_path):
    generate_world(tmp_path, 4, 2, seed=3, progress=False)
    written = sorted(p.relative_to(world.output_dir) for p in world.output_dir.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in written:
        assert (world.output_dir / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative
    other = generate_world(tmp_path / "other", 4, 2, seed=4, progress=False)
    assert other.files["stage2_manifest"].read_bytes() != world.files["stage2_manifest"].read_bytes()


def test_load_world_round_trip(world):
    loaded = load_world(world.output_dir)
    assert loaded.train_ids == world.train_ids and loaded.test_ids == world.test_ids
    assert set(loaded.files) == set(world.files)
    for video_id, spec in world.videos.items():
        assert loaded.videos[video_id].to_dict() == spec.to_dict()
        assert [e.caption for e in loaded.events(video_id)] == [e.caption for e in world.events(video_id)]
        np.testing.assert_array_equal(loaded.videos[video_id].render_frame(1.0), spec.render_frame(1.0))
    with pytest.raises(FileNotFoundError, match="world.json"):
        load_world(world.output_dir / "videos")


def test_videos_decode_to_rendered_frames(world):
    video_id = world.train_ids[0]
    spec = world.videos[video_id]
    frames, meta = sample_video(world.video_path(video_id), 8)
    assert meta.total_frames == spec.num_frames and meta.duration == pytest.approx(spec.duration)
    rendered = np.stack([spec.render_frame(t) for t in np.asarray(meta.frame_indices) / spec.fps])
    error = np.abs(frames.astype(np.int16) - rendered.astype(np.int16)).mean()
    assert error < 6, error  # libx264 crf 18 on 2-px texture cells


def test_point_track_lands_on_the_same_texture_pixel():
    rng = np.random.default_rng(0)
    for seed in range(5):
        spec = sample_video_spec(np.random.default_rng(seed), f"v{seed}", 64, 48, num_objects=(3, 3))
        frames = {t: spec.render_frame(t) for t in spec.frame_times}
        for index in range(len(spec.objects)):
            t0 = next(t for t in spec.frame_times if spec.object_mask(index, t).any())
            ys, xs = np.nonzero(spec.object_mask(index, t0))
            picks = rng.choice(len(xs), size=min(5, len(xs)), replace=False)
            positions, visible = spec.track_points(
                index, np.stack([xs[picks], ys[picks]], axis=1), t0, spec.frame_times
            )
            assert visible[list(spec.frame_times).index(t0)].all()  # picked from the visible mask at t0
            for k, t in enumerate(spec.frame_times):
                seen = np.round(positions[k, visible[k]]).astype(int)
                np.testing.assert_array_equal(
                    frames[t][seen[:, 1], seen[:, 0]], frames[t0][ys[picks], xs[picks]][visible[k]]
                )


def test_point_track_lossless_video_agrees(tmp_path):
    spec = _crossing_spec()
    path = write_video(tmp_path / "x.mkv", spec.frames(), fps=spec.fps, codec="ffv1")
    frames, meta = sample_video(path, spec.num_frames)
    assert meta.total_frames == spec.num_frames
    positions, visible = spec.point_track(1, (10.0, 32.0), 1.5, spec.frame_times)
    colour = spec.render_frame(1.5)[32, 10]
    for frame, (x, y), seen in zip(frames, positions, visible):
        if seen:
            np.testing.assert_array_equal(frame[int(round(y)), int(round(x))], colour)


def test_visibility_on_occlusion_exit_and_absence():
    spec = _crossing_spec()
    times = spec.frame_times
    positions, visible = spec.point_track(0, (20.0, 32.0), 0.0, times)
    np.testing.assert_array_equal(positions, np.tile([20.0, 32.0], (len(times), 1)))  # it never moves
    circle = spec.objects[1]
    local = np.array([20, 32]) - circle.offset(times)  # the square's point in the circle's sprite
    inside = np.all((local >= 0) & (local < circle.size), axis=1)
    covered = circle.present(times) & inside & circle.mask[local[:, 1].clip(0, 15), local[:, 0].clip(0, 15)]
    assert covered.any() and not covered.all()
    np.testing.assert_array_equal(visible, ~covered)
    # the circle leaves through the right edge, and does not exist before 1 s or after 3 s
    positions, visible = spec.point_track(1, (22.0, 32.0), 1.5, times)
    inside = (positions[:, 0] > -0.5) & (positions[:, 0] < 63.5)
    present = (times >= 1.0) & (times < 3.0)
    np.testing.assert_array_equal(visible, inside & present)
    assert present.any() and (present & ~inside).any()
    # a point off the shape (the circle's corner) is never visible
    _, visible = spec.point_track(1, (circle.offset(1.5)[0], circle.offset(1.5)[1]), 1.5, times)
    assert not visible.any()


def test_object_mask_is_the_visible_part():
    spec = _crossing_spec()
    for t in spec.frame_times:
        frame = spec.render_frame(t)
        masks = [spec.object_mask(i, t) for i in range(len(spec.objects))]
        assert not (masks[0] & masks[1]).any()
        for obj, mask in zip(spec.objects, masks):
            pixels = frame[mask]
            # every pixel of the mask has the object's hue: the texture only scales its brightness
            hue = pixels.astype(np.float64) / np.maximum(pixels.max(axis=1, keepdims=True), 1)
            np.testing.assert_allclose(hue, np.tile(np.array(obj.rgb) / max(obj.rgb), (len(pixels), 1)), atol=0.02)
    assert spec.object_mask(1, 0.5).sum() == 0 and spec.object_mask(0, 1.4).sum() < spec.objects[0].mask.sum()


def test_keypoint_trajectories_follow_the_object():
    spec = _crossing_spec()
    sampled = spec.sampled_frame_times(100)
    trajectories = spec.keypoint_trajectories(1, 1.5)
    assert trajectories.shape == (3, 100, 2)
    assert (trajectories[:, ~spec.objects[1].present(sampled)] == -1).all()
    seen = (trajectories != -1).all(axis=2)
    assert ((trajectories[seen] >= 0) & (trajectories[seen] <= 1)).all()
    # keypoints are points on the object: they move exactly as the sprite does
    whole = [n for n, t in enumerate(sampled) if spec.visible_area(1, [t])[0] == spec.objects[1].mask.sum()]
    assert len(whole) > 2 and seen[:, whole].all()
    pixels = normalized_to_pixels(trajectories[:, whole], 64, 64)
    moved = spec.objects[1].offset(sampled[whole]) - spec.objects[1].offset(sampled[whole[0]])
    np.testing.assert_allclose(pixels - pixels[:, :1], np.broadcast_to(moved, pixels.shape), atol=1e-4)
    ys, xs = np.nonzero(spec.object_mask(1, sampled[whole[0]]))
    assert np.abs(pixels[:, 0].mean(axis=0) - [xs.mean(), ys.mean()]).max() < 2.0
    # the still square: hidden keypoints while the circle passes over it, fixed ones otherwise
    square = spec.keypoint_trajectories(0, 0.0)
    clear = np.array([spec.visible_area(0, [t])[0] == 256 for t in sampled])
    assert (square[:, clear] == square[:, :1]).all()
    assert (square[:, ~clear] == -1).any() and not (square[:, ~clear] == -1).all()
    # an event span blanks the frames outside it
    inside = (sampled >= 1.5) & (sampled <= 2.0)
    spanned = spec.keypoint_trajectories(1, 1.5, span=(1.5, 2.0))
    assert (spanned[:, ~inside] == -1).all()
    np.testing.assert_array_equal(spanned[:, inside], trajectories[:, inside])
    assert np.allclose(normalized_to_pixels(pixels_to_normalized([3.0, 4.0], 64, 64), 64, 64), [3.0, 4.0])


def test_event_captions_match_the_motion():
    for seed in range(8):
        spec = sample_video_spec(np.random.default_rng(seed), f"v{seed}", 64, 64, num_objects=(2, 3))
        events = video_events(spec)
        assert events == sorted(events, key=lambda e: (e.start, e.end, e.caption))
        for event in events:
            assert 0 <= event.start < event.end <= spec.duration + 1e-9
            for phrase in event.phrases:
                assert event.caption[slice(*phrase.char_span)] == phrase.text
                assert phrase.text.lower().endswith(spec.objects[phrase.object_index].name)
            if event.kind in ("move", "enter", "exit"):
                obj = spec.objects[event.phrases[0].object_index]
                delta = obj.center(event.end) - obj.center(event.start)
                words = {"left": delta[0] < 0, "right": delta[0] > 0, "up": delta[1] < 0, "down": delta[1] > 0}
                assert words[event.direction], (event.caption, delta)
            if event.kind == "occlude":
                assert len(event.phrases) == 2


def test_localized_narrative_word_points_land_on_objects(world):
    records = [json.loads(line) for line in world.files["stage1"].read_text().splitlines()]
    assert len(records) == len(world.images)
    loaded = load_localized_narratives(world.files["stage1"])
    assert len(loaded) == len(records) and all(Path(r["video"]).is_file() for r in loaded)
    for record in records:
        spec = world.images[record["image_id"]]
        assert (world.output_dir / record["image"]).is_file()
        trace = np.array([[p["x"], p["y"], p["t"]] for stroke in record["traces"] for p in stroke])
        utterances = [(u["utterance"], u["start_time"], u["end_time"]) for u in record["timed_caption"]]
        points = dict(word_points(record["caption"], utterances, trace))
        for index, obj in enumerate(spec.objects):
            article = "an" if obj.color == "orange" else "a"
            begin = record["caption"].index(f"{article} {obj.name}")
            colour_start = begin + len(article) + 1
            for word_start in (begin, colour_start, colour_start + len(obj.color) + 1):  # article, colour, shape
                span = next(s for s in points if s[0] == word_start)
                x, y = np.round(normalized_to_pixels(points[span], spec.width, spec.height)).astype(int)
                assert spec.object_mask(index, 0.0)[y, x], (record["caption"], obj.name)


def test_stage2_files_load_and_agree(world):
    records = load_trajectory_data(world.files["stage2_ground_truth"])
    assert len(records) == len(world.train_ids)
    assert all(np.asarray(t["trajectory"]).shape == (3, 100, 2) for r in records for t in r["trajectories"])
    test_records = load_trajectory_data(world.files["test_stage2_ground_truth"])
    assert {r["id"] for r in test_records} == set(world.test_ids)
    for line in world.files["test_stage2_manifest"].read_text().splitlines():
        item = json.loads(line)
        assert (world.files["test_stage2_manifest"].parent / item["video"]).is_file()
        assert all("phrases" not in event for event in item["events"])
        assert [e["caption"] for e in item["events"]] == [e.caption for e in world.events(item["id"])]


def test_stage3_and_test_splits_parse(world):
    dataset = load_instruction_data(world.files["stage3"])
    kinds = {record["id"].split("_")[2] for record in dataset}
    assert kinds == {"qa", "grounding", "dense"}
    for record in json.loads(world.files["stage3"].read_text()):
        video_id = "_".join(record["id"].split("_")[:2])
        spec, events = world.videos[video_id], world.events(video_id)
        answer = record["conversations"][1]["value"]
        if "_grounding_" in record["id"]:
            event = events[int(record["id"].split("_")[-1])]
            expected = tuple(seconds_to_frame_index(t, spec.duration) for t in (event.start, event.end))
            assert parse_frame_span(answer) == expected
        if "_dense_" in record["id"]:
            assert [caption for _, _, caption in parse_dense_captions(answer)] == [e.caption for e in events]
    captions = load_activitynet_captions(world.files["test_activitynet_captions"])
    assert set(captions) == set(world.test_ids)
    for video_id, item in captions.items():
        assert item.sentences == [e.caption for e in world.events(video_id)]
        assert item.duration == pytest.approx(world.videos[video_id].duration)
    samples = load_video_qa(world.files["test_qa_questions"], world.files["test_qa_answers"])
    assert {s.video_id for s in samples} == set(world.test_ids)
    assert {"count", "existence"} <= {s.type for s in samples}
    assert {s.answer for s in samples if s.type == "existence"} == {"yes", "no"}


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="unknown color"):
        ObjectSpec("teal", "circle", 8, [(0, 1, 1), (1, 1, 1)], texture_seed=0)
    with pytest.raises(ValueError, match="keyframes"):
        ObjectSpec("red", "circle", 8, [(1, 1, 1), (0, 1, 1)], texture_seed=0)
    with pytest.raises(ValueError, match="even"):
        sample_video_spec(np.random.default_rng(0), "odd", 63, 64)


def test_any_even_size():
    spec = sample_video_spec(np.random.default_rng(0), "wide", 320, 180, fps=5.0, duration_range=(3.0, 3.0))
    assert spec.num_frames == 15 and spec.render_frame(1.0).shape == (180, 320, 3)
    assert all(10 <= obj.size <= 180 for obj in spec.objects)


def test_an_appearance_rounded_past_the_last_start_still_samples():
    # seed 5, 42nd spec: `appear` rounds up to a frame past duration - min_life; sampling used to raise
    rng = np.random.default_rng(5)
    specs = [sample_video_spec(rng, f"v{i}", 64, 64) for i in range(42)]
    for obj in specs[-1].objects:
        assert 0 <= obj.appear < obj.disappear <= specs[-1].duration + 1e-9


@pytest.mark.slow
def test_videos_are_the_same_bytes_from_one_process_to_the_next(tmp_path):
    """x264 with one thread still encoded some videos differently in different processes (16 of 240 between
    two runs, until `cpu-independent`): the world is written three times by fresh processes."""
    script = "import sys; from processing.synthetic import generate_world; generate_world(sys.argv[1], 8, 1, progress=False)"
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, cwd=REPO)
    for video in sorted((tmp_path / "a" / "videos").glob("*.mp4")):
        copies = {(tmp_path / name / "videos" / video.name).read_bytes() for name in ("a", "b", "c")}
        assert len(copies) == 1, video.name
