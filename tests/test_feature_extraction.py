"""`pite extract-features`: features equal the model's, bad videos are reported and skipped, reruns resume."""

import json

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteVideoProcessor
from modeling_pite.cli import main
from modeling_pite.feature_extraction import VideoFeatureStore, extract_features, list_videos
from processing.video_writer import write_video


def frames(seed: int, count: int = 10) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (36, 48, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = PiteForConditionalGeneration(PiteConfig.from_preset("tiny")).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-pite"
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "walk.mp4", frames(0), fps=5)
    write_video(root / "sub" / "jump.webm", frames(1), fps=5, codec="libvpx-vp9")
    write_video(root / "run.avi", frames(2), fps=5, codec="mpeg4")
    good = (root / "walk.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(good[: len(good) // 3])  # truncated: its index is gone
    (root / "notes.txt").write_text("not a video, and not listed")
    return root


def expected_features(model, path, num_frames):
    processor = PiteVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pixel_values = processor(str(path), num_frames=num_frames, return_tensors="pt")["pixel_values_videos"]
    with torch.no_grad():
        return model.get_frame_features(pixel_values)[0]


def test_list_videos_from_folder_and_list_file(video_folder, tmp_path):
    assert sorted(list_videos(video_folder)) == ["broken", "run", "sub/jump", "walk"]
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# two videos\n{video_folder / 'walk.mp4'}\nclip7\t{video_folder / 'run.avi'}\n\n")
    assert list_videos(listing) == {"walk": video_folder / "walk.mp4", "clip7": video_folder / "run.avi"}
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        list_videos(tmp_path / "nowhere")


def test_extracts_a_folder_reports_the_corrupt_video_and_resumes(checkpoint, video_folder, tmp_path):
    path, model = checkpoint
    output = tmp_path / "features"
    argv = ["extract-features", "--model", str(path), "--videos", str(video_folder), "--output", str(output)]
    assert main([*argv, "--batch-size", "3", "--shard-size", "2", "--device", "cpu"]) == 0

    failed = json.loads((output / "failed.json").read_text())
    assert list(failed) == ["broken"] and "broken.mp4" in failed["broken"]
    store = VideoFeatureStore(output)
    assert sorted(store) == ["run", "sub/jump", "walk"] and "broken" not in store
    assert store.metadata["num_frames"] == model.config.num_frames and store.metadata["feature_dim"] == 24
    assert len(set(store.weight_map.values())) == 2  # shards of two videos
    for video_id, file in [("walk", "walk.mp4"), ("sub/jump", "sub/jump.webm"), ("run", "run.avi")]:
        features = store[video_id]
        assert features.dtype == torch.float16 and features.shape == (model.config.num_frames, 24)
        expected = expected_features(model, video_folder / file, model.config.num_frames)
        torch.testing.assert_close(features.float(), expected, rtol=1e-2, atol=2e-3)

    shards = {p.name: p.stat().st_mtime_ns for p in output.glob("*.safetensors")}
    counts = extract_features(path, video_folder, output, device="cpu")
    assert counts == {"extracted": 0, "skipped": 3, "failed": 1}
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("*.safetensors")} == shards  # nothing rewritten

    with pytest.raises(KeyError, match="broken"):
        store["broken"]
    with pytest.raises(ValueError, match="num_frames"):
        extract_features(path, video_folder, output, num_frames=5, device="cpu")


def test_resume_encodes_only_new_videos(checkpoint, video_folder, tmp_path):
    path, _ = checkpoint
    output = tmp_path / "features"
    listing = tmp_path / "first.txt"
    listing.write_text(f"{video_folder / 'walk.mp4'}\n")
    assert extract_features(path, listing, output, device="cpu") == {"extracted": 1, "skipped": 0, "failed": 0}
    first = VideoFeatureStore(output)["walk"].clone()
    counts = extract_features(path, video_folder, output, device="cpu")
    assert counts == {"extracted": 2, "skipped": 1, "failed": 1}
    store = VideoFeatureStore(output)
    assert sorted(store) == ["run", "sub/jump", "walk"] and torch.equal(store["walk"], first)


def test_clip_vision_checkpoint_and_feature_store_errors(video_folder, tmp_path):
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=1, num_attention_heads=2,
        patch_size=16, image_size=32,
    )  # fmt: skip
    tower = CLIPVisionModelWithProjection(config).eval()
    tower.save_pretrained(tmp_path / "clip")
    counts = extract_features(tmp_path / "clip", video_folder, tmp_path / "out", num_frames=6, device="cpu")
    assert counts == {"extracted": 3, "skipped": 0, "failed": 1}
    processor = PiteVideoProcessor(num_frames=6, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pixel_values = processor(str(video_folder / "run.avi"), return_tensors="pt")["pixel_values_videos"][0]
    with torch.no_grad():
        expected = tower(pixel_values=pixel_values).image_embeds
    torch.testing.assert_close(VideoFeatureStore(tmp_path / "out")["run"].float(), expected, rtol=1e-2, atol=2e-3)
    with pytest.raises(FileNotFoundError, match="no feature index"):
        VideoFeatureStore(tmp_path)
