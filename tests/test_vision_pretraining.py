"""The demo's stand-in for CLIP pretraining: a tiny tower learns which objects a scene holds and where."""

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from processing.synthetic import pretrain_vision_tower, render_scenes
from processing.synthetic.vision_pretraining import OBJECT_NAMES

MEAN, STD = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]


def tiny_tower(seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, projection_dim=64, num_hidden_layers=1, num_attention_heads=4,
        patch_size=8, image_size=64,
    )  # fmt: skip
    return CLIPVisionModelWithProjection(config).requires_grad_(False)


def test_scenes_name_their_objects_and_centres():
    frames, presence, centres = render_scenes(20, 64, seed=3)
    assert frames.shape == (20, 64, 64, 3) and frames.dtype == np.uint8
    assert presence.shape == (20, len(OBJECT_NAMES)) and set(presence.sum(1)) <= {1.0, 2.0, 3.0}
    assert ((centres >= 0) & (centres <= 1)).all() and (centres[presence == 0] == 0).all()
    again = render_scenes(20, 64, seed=3)
    assert np.array_equal(frames, again[0]) and not np.array_equal(frames, render_scenes(20, 64, seed=4)[0])


@pytest.mark.slow
def test_pretraining_puts_object_positions_into_the_embedding():
    # lone objects (the demo's tower trains on 1-3 objects per scene, 3000 steps of 64)
    kwargs = {"num_scenes": 2000, "num_eval_scenes": 200, "steps": 1500, "batch_size": 32, "num_objects": (1, 1)}
    report = pretrain_vision_tower(tiny_tower(), MEAN, STD, progress=False, **kwargs)
    # held-out scenes: the throwaway head reads object centres off `image_embeds` far better than the mean does
    assert report.centre_l1 < 0.8 * report.mean_centre_l1
    # and names the lone object: calling every name absent has recall 0, a random call precision 1 / 18
    assert report.presence_recall > 0.5 and report.presence_precision > 0.5, report


def test_pretraining_trains_in_place_deterministically_and_leaves_the_tower_frozen():
    kwargs = {"num_scenes": 64, "num_eval_scenes": 16, "steps": 3, "batch_size": 8, "progress": False}
    towers = [tiny_tower(), tiny_tower()]
    before = {name: param.clone() for name, param in towers[0].named_parameters()}
    reports = [pretrain_vision_tower(tower, MEAN, STD, seed=1, **kwargs) for tower in towers]
    assert reports[0] == reports[1]
    for (name, param), twin in zip(towers[0].named_parameters(), towers[1].parameters()):
        assert torch.equal(param, twin), name
    assert any(not torch.equal(before[name], param) for name, param in towers[0].named_parameters())
    assert not any(param.requires_grad for param in towers[0].parameters()) and not towers[0].training
