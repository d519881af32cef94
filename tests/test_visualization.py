import av
import numpy as np
import pytest
from PIL import Image

from modeling_pite.visualization import contact_sheet, draw_trajectories, save_trajectory_visualization

NUM_FRAMES, HEIGHT, WIDTH = 6, 48, 64


@pytest.fixture
def frames():
    return np.zeros((NUM_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture
def trajectory():
    # one point moving left to right along the middle row, invisible in the last frame
    points = np.stack([np.linspace(0.1, 0.9, NUM_FRAMES), np.full(NUM_FRAMES, 0.5)], axis=-1)[None]
    points[0, -1] = -1
    return points


def test_draw_marks_the_point_where_the_trajectory_says(frames, trajectory):
    drawn = draw_trajectories(frames, {"a red circle": trajectory}, tail=0)
    assert drawn.shape == frames.shape and not frames.any()  # input untouched
    xs = np.round(trajectory[0, :, 0] * (WIDTH - 1)).astype(int)
    y = round(0.5 * (HEIGHT - 1))
    for index in range(NUM_FRAMES - 1):
        assert drawn[index, y, xs[index]].any(), f"no mark at frame {index}"
    assert not drawn[0, y, xs[3]].any()  # the dot moves with the trajectory
    # invisible point: only the label is drawn, nothing near the middle row
    assert not drawn[-1, HEIGHT // 2 - 3 : HEIGHT // 2 + 3].any()


def test_draw_accepts_pipeline_output_and_checks_frame_count(frames, trajectory):
    drawn = draw_trajectories(frames, [{"phrase": "the ball", "trajectory": trajectory.tolist()}])
    assert drawn.any()
    with pytest.raises(ValueError, match="has 6 frames but 5 frames"):
        draw_trajectories(frames[:5], {"the ball": trajectory})
    with pytest.raises(ValueError, match=r"\[P, N, 2\]"):
        draw_trajectories(frames, {"the ball": trajectory[0]})


def test_contact_sheet_tiles_frames_in_order(frames):
    frames = frames.copy()
    for index in range(NUM_FRAMES):
        frames[index] = 40 * index
    sheet = np.asarray(contact_sheet(frames, columns=4))
    assert sheet.shape == (2 * HEIGHT, 4 * WIDTH, 3)
    assert sheet[HEIGHT // 2, WIDTH + WIDTH // 2, 0] == 40
    assert sheet[HEIGHT + HEIGHT // 2, WIDTH + WIDTH // 2, 0] == 200


@pytest.mark.parametrize("suffix", [".png", ".gif", ".mp4"])
def test_save_writes_a_readable_file(tmp_path, frames, trajectory, suffix):
    path = save_trajectory_visualization(
        tmp_path / f"out{suffix}", frames, {"the ball": trajectory}, timestamps=np.arange(NUM_FRAMES) / 2
    )
    if suffix == ".mp4":
        with av.open(str(path)) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(decoded) == NUM_FRAMES and decoded[0].shape == (HEIGHT, WIDTH, 3)
    else:
        image = Image.open(path)
        assert getattr(image, "n_frames", 1) == (NUM_FRAMES if suffix == ".gif" else 1)
        assert np.asarray(image.convert("RGB")).any()


def test_save_rejects_unknown_format(tmp_path, frames, trajectory):
    with pytest.raises(ValueError, match="unsupported output"):
        save_trajectory_visualization(tmp_path / "out.avi", frames, {"the ball": trajectory})
