"""Annotation building blocks on self-made arrays: phrases, masks, trackers, keypoints, resampling."""

import cv2
import numpy as np
import pytest
from PIL import Image

from processing.annotation.grounding import ColorShapeGrounder, decode_rle, mask_from_spec
from processing.annotation.keypoints import keypoint_centres, keypoint_trajectories
from processing.annotation.phrases import RuleBasedPhraseExtractor, SpacyPhraseExtractor
from processing.annotation.pipeline import resample_to_video_frames, select_query_points
from processing.annotation.tracking import TRACKERS, build_tracker, register_tracker


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("The red circle moves to the left.", ["The red circle"]),
        ("The green square moves up, then the blue triangle enters.", ["The green square", "the blue triangle"]),
        ("A man is riding a bike down the street.", ["A man", "a bike", "the street"]),
        ("A running dog jumps over two small boxes", ["A running dog", "two small boxes"]),
        ("It moves quickly to the right.", []),
    ],
)
def test_rule_based_phrases(caption, expected):
    phrases = RuleBasedPhraseExtractor()(caption)
    assert [p.text for p in phrases] == expected
    assert all(caption[p.char_span[0] : p.char_span[1]] == p.text for p in phrases)


def test_spacy_backend_explains_what_is_missing():
    with pytest.raises((ImportError, OSError), match="spacy|spaCy"):
        SpacyPhraseExtractor("en_core_web_sm")


def test_mask_specs(tmp_path):
    box = mask_from_spec({"box": [10, 20, 30, 40]}, (50, 100), source_size=(100, 200))  # source is 2x larger
    assert box.sum() == 10 * 10 and box[10:20, 5:15].all()
    normalized = mask_from_spec({"box": [0.5, 0.5, 1.0, 1.0], "normalized": True}, (50, 100))
    assert normalized[25:, 50:].all() and normalized.sum() == 25 * 50
    polygon = mask_from_spec({"polygon": [[0, 0], [9, 0], [9, 9], [0, 9]]}, (20, 20))
    assert polygon.sum() == 100
    Image.fromarray((box * 255).astype(np.uint8)).resize((200, 100), Image.NEAREST).save(tmp_path / "m.png")
    assert np.array_equal(mask_from_spec({"png": str(tmp_path / "m.png")}, (50, 100)), box)
    with pytest.raises(ValueError, match="unknown mask spec"):
        mask_from_spec({"circle": 3}, (5, 5))


def test_rle_list_and_compressed_counts_agree():
    # column-major runs over a 3x3 mask: 3 off, 2 on, 4 off -> pixels (0, 1) and (1, 1) set
    expected = np.zeros((3, 3), dtype=bool)
    expected[0:2, 1] = True
    assert np.array_equal(decode_rle({"size": [3, 3], "counts": [3, 2, 4]}), expected)
    assert np.array_equal(decode_rle({"size": [3, 3], "counts": "324"}), expected)
    # after the second run pycocotools stores differences to the run two before: "O" is -1, so 2 - 1 = 1
    assert np.array_equal(
        decode_rle({"size": [2, 5], "counts": "324O"}), decode_rle({"size": [2, 5], "counts": [3, 2, 4, 1]})
    )
    with pytest.raises(ValueError, match="sum to"):
        decode_rle({"size": [3, 3], "counts": [3, 2]})


def _textured(height, width, seed=0):
    noise = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 1.2)


def test_colour_shape_grounder_picks_the_named_blob():
    frame = np.full((80, 120, 3), 128, dtype=np.uint8)
    texture = 0.6 + 0.4 * (_textured(80, 120) / 255.0)[..., None]
    yy, xx = np.mgrid[:80, :120]
    circle = (xx - 30) ** 2 + (yy - 40) ** 2 <= 15**2
    square = (np.abs(xx - 85) <= 14) & (np.abs(yy - 40) <= 14)
    frame[circle] = (np.array([220, 30, 30]) * texture[circle]).astype(np.uint8)
    frame[square] = (np.array([220, 30, 30]) * texture[square]).astype(np.uint8)
    grounder = ColorShapeGrounder()
    for phrase, truth in [("the red circle", circle), ("a red square", square)]:
        mask = grounder(frame, phrase)
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85
    assert not grounder(frame, "the blue circle").any()


def test_colour_shape_grounder_splits_touching_shapes_of_one_colour():
    frame = np.full((80, 120, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[:80, :120]
    circle = (xx - 40) ** 2 + (yy - 40) ** 2 <= 16**2
    triangle = (np.abs(xx - 64) <= (yy - 26) / 2) & (yy <= 58) & ~circle  # touches the circle's right side
    frame[circle | triangle] = (150, 40, 210)
    grounder = ColorShapeGrounder()
    for phrase, truth in [("the purple circle", circle), ("the purple triangle", triangle)]:
        mask = grounder(frame, phrase)
        assert (mask & truth).sum() / (mask | truth).sum() > 0.7, phrase  # one blob of 0.6 and 0.4 unsplit


def _moving_frames(num_frames=20, velocity=(1.5, 0.5), size=(90, 120)):
    """A textured plane translating by `velocity` pixels per frame (sub-pixel, bilinear)."""
    height, width = size
    texture = _textured(height + 80, width + 80)
    frames = []
    for t in range(num_frames):
        shift = np.float32([[1, 0, -velocity[0] * t + 0], [0, 1, -velocity[1] * t]])
        warped = cv2.warpAffine(texture, shift, (width + 80, height + 80))
        frames.append(np.repeat(warped[40 : 40 + height, 40 : 40 + width, None], 3, axis=2))
    # content at plane (x, y) shows at x - v t; so a point moves by -velocity per frame
    return np.stack(frames)


@pytest.mark.parametrize("name", ["lk", "farneback"])
def test_trackers_follow_subpixel_translation(name):
    frames = _moving_frames()
    points = np.stack(np.meshgrid(np.arange(30, 90, 10), np.arange(25, 70, 10)), -1).reshape(-1, 2).astype(np.float32)
    result = build_tracker(name)(frames, points)
    truth = points[None] - np.arange(len(frames))[:, None, None] * np.array([1.5, 0.5], dtype=np.float32)
    assert result.visible.mean() > 0.95
    error = np.abs(result.positions - truth)[result.visible]
    assert error.mean() < (0.2 if name == "lk" else 0.5)


def test_points_leaving_the_frame_become_invisible():
    frames = _moving_frames(num_frames=30, velocity=(3.0, 0.0))
    points = np.array([[8.0, 40.0], [100.0, 40.0]], dtype=np.float32)  # the first exits at the left edge
    result = build_tracker("lk")(frames, points)
    assert result.visible[:2].all() and not result.visible[5:, 0].any() and result.visible[:, 1].all()


def test_occluded_points_are_lost_then_reacquired():
    frames = _moving_frames(num_frames=30, velocity=(1.0, 0.0)).copy()
    frames[10:16, 30:50, 50:70] = 200  # a static flat patch hides the point for 6 frames
    points = np.array([[70.0, 40.0], [30.0, 70.0]], dtype=np.float32)  # reaches x 60 at frame 10
    result = build_tracker("lk")(frames, points, groups=np.array([0, 0]))
    assert result.visible[:9, 0].all() and not result.visible[11:15, 0].any() and result.visible[18:, 0].all()
    truth = 70.0 - np.arange(30)
    assert np.abs(result.positions[18:, 0, 0] - truth[18:]).max() < 0.5
    without = build_tracker("lk", reacquire=False)(frames, points, groups=np.array([0, 0]))
    assert not without.visible[18:, 0].any()


def test_register_tracker():
    register_tracker("frozen", lambda: lambda frames, points, groups=None: None)
    try:
        assert build_tracker("frozen") is not None
    finally:
        TRACKERS.pop("frozen")
    with pytest.raises(ValueError, match="unknown tracker 'nope'"):
        build_tracker("nope")


def test_keypoints_cluster_the_mask_and_follow_visible_members():
    mask = np.zeros((60, 90), dtype=bool)
    mask[20:30, 10:70] = True  # a bar: three keypoints from left to right
    centres = keypoint_centres(mask, 3, seed=0)
    assert np.all(np.diff(centres[:, 0]) > 15) and np.allclose(centres[:, 1], 24.5, atol=0.6)
    points = select_query_points(mask, _textured(60, 90), max_points=30, erosion=0)
    assert len(points) >= 15 and mask[points[:, 1].astype(int), points[:, 0].astype(int)].all()
    # points move right by 1 px per frame for 5 frames; the left third vanishes from frame 2
    positions = points[None] + np.arange(5)[:, None, None] * np.array([1.0, 0.0], dtype=np.float32)
    visible = np.ones((5, len(points)), dtype=bool)
    visible[2:, points[:, 0] < centres[0, 0] + 10] = False
    trajectory = keypoint_trajectories(positions, visible, centres, (60, 90))
    assert trajectory.shape == (3, 5, 2)
    assert np.all(trajectory[0, 2:] == -1)
    expected = (centres[1:, None] + np.arange(5)[None, :, None] * [1.0, 0.0] + 0.5) / [90, 60]
    assert np.allclose(trajectory[1:], expected, atol=1e-5)


def test_resample_to_video_frames():
    trajectory = np.array([[[0.1, 0.1], [0.3, 0.3], [-1, -1], [0.5, 0.5]]], dtype=np.float32)
    out = resample_to_video_frames(trajectory, np.array([10, 12, 14, 16]), np.array([0, 10, 11, 13, 16, 20]))
    assert np.allclose(out[0, :, 0], [-1, 0.1, 0.2, -1, 0.5, -1])


def test_config_from_yaml(tmp_path):
    from processing.annotation import AnnotationConfig

    path = tmp_path / "annotate.yaml"
    path.write_text("tracker: farneback\nmax_points: 32\ntracker_kwargs:\n  fb_threshold: 2.0\n")
    config = AnnotationConfig.from_file(path, num_keypoints=4)
    assert (config.tracker, config.max_points, config.num_keypoints) == ("farneback", 32, 4)
    assert config.tracker_kwargs == {"fb_threshold": 2.0} and AnnotationConfig(**config.to_dict()) == config
    path.write_text("trackers: lk\n")
    with pytest.raises(ValueError, match="unknown annotation config keys \\['trackers'\\]"):
        AnnotationConfig.from_file(path)
