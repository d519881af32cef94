"""benchmarks/grounding_oracle.py: the oracle features are each named object's true visible share and centre."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from processing.synthetic import ObjectSpec, VideoSpec, pixels_to_normalized
from processing.synthetic.vision_pretraining import OBJECT_NAMES

spec = importlib.util.spec_from_file_location(
    "grounding_oracle", Path(__file__).resolve().parents[1] / "benchmarks" / "grounding_oracle.py"
)
grounding_oracle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grounding_oracle)


def test_oracle_features_follow_visibility_occlusion_and_position():
    # a red square sits still at the left; a blue circle drawn above it covers it on its way out to the right
    below = ObjectSpec("red", "square", 16, [(0.0, 20.0, 32.0), (4.0, 20.0, 32.0)], texture_seed=1)
    above = ObjectSpec("blue", "circle", 16, [(1.0, 0.0, 32.0), (3.0, 90.0, 32.0)], texture_seed=2)
    video = VideoSpec("crossing", 64, 64, 10.0, 40, background_seed=0, objects=[below, above])
    features = grounding_oracle.oracle_features(video, num_frames=100, dim=64) / grounding_oracle.ORACLE_SCALE
    names, times = len(OBJECT_NAMES), video.sampled_frame_times(100)
    red, blue = OBJECT_NAMES.index("red square"), OBJECT_NAMES.index("blue circle")

    np.testing.assert_allclose(features[:, red], video.visible_area(0, times) / 256, rtol=1e-6)
    assert features[:, red].max() == 1.0 and features[:, red].min() < 1.0  # covered for a while
    present = (times >= 1.0) & (times < 3.0)
    assert (features[~present, blue] == 0).all() and (features[present, blue] > 0).any()
    np.testing.assert_allclose(
        features[:, names + 2 * red : names + 2 * red + 2],
        np.tile(pixels_to_normalized(np.array([20.0, 32.0]), 64, 64), (100, 1)),
    )
    assert (features[~present, names + 2 * blue : names + 2 * blue + 2] == 0).all()
    others = np.delete(features, [red, blue, names + 2 * red, names + 2 * red + 1, names + 2 * blue,
                                  names + 2 * blue + 1], axis=1)  # fmt: skip
    assert not others.any()


def test_oracle_layout_must_fit_the_cache():
    video = VideoSpec("empty", 64, 64, 10.0, 10, background_seed=0, objects=[])
    with pytest.raises(ValueError, match="needs 54 feature dimensions, the cache has 32"):
        grounding_oracle.oracle_features(video, num_frames=100, dim=32)


def test_refuses_what_would_silently_train_on_the_tower_features(tmp_path, monkeypatch, capsys):
    demo_output, tower_run = tmp_path / "demo", tmp_path / "tower_run"
    for name in ("summary.json", "world/world.json", "init/demo_init.json", "features/index.json"):
        (demo_output / name).parent.mkdir(parents=True, exist_ok=True)
        (demo_output / name).write_text("{}")
    (tower_run / "features").mkdir(parents=True)  # a demo run's folder, its stages trained on tower features
    for argv, message in [
        ([str(tmp_path / "nothing"), str(tmp_path / "new")], "not a finished `pite demo` output: missing"),
        ([str(demo_output), str(demo_output)], "output_dir must differ from demo_output"),
        ([str(demo_output), str(tower_run)], "holds a demo run on the tower's features"),
    ]:
        monkeypatch.setattr("sys.argv", ["grounding_oracle.py", *argv])
        with pytest.raises(SystemExit):
            grounding_oracle.main()
        assert message in capsys.readouterr().err

    # an init/ built for another model or world: run_demo would rebuild it and re-extract tower features
    settings = {"num_train_videos": 6, "num_test_videos": 2, "seed": 0, "tower_steps": 20, "stage1_steps": 1,
                "stage2_steps": 1, "stage3_steps": 1}  # fmt: skip
    (demo_output / "summary.json").write_text(json.dumps({"config": settings}))
    monkeypatch.setattr("sys.argv", ["grounding_oracle.py", str(demo_output), str(tmp_path / "new")])
    with pytest.raises(SystemExit):
        grounding_oracle.main()
    assert "init was built for another model or world" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # refused before anything was copied
