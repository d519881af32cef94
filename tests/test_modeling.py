import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM

import modeling_pite.modeling_pite as modeling
from modeling_pite import PiteConfig, PiteForConditionalGeneration, PiteModel
from modeling_pite.modeling_pite import count_coordinate_items

FRAMES = 4
VIDEO = 3  # the tiny preset's <video> id


def tiny_config(**overrides) -> PiteConfig:
    return PiteConfig.from_preset("tiny", num_frames=FRAMES, **overrides)


def tiny_model(seed: int = 0, **overrides) -> PiteForConditionalGeneration:
    torch.manual_seed(seed)
    return PiteForConditionalGeneration(tiny_config(**overrides)).eval()


def video_batch(batch_size: int = 2, frames: int = FRAMES, text: int = 6, seed: int = 0) -> dict:
    """`<s> t <video>*frames t...` per row, random frames."""
    generator = torch.Generator().manual_seed(seed)
    before = torch.randint(4, 256, (batch_size, 2), generator=generator)
    after = torch.randint(4, 256, (batch_size, text), generator=generator)
    input_ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), before,
                           torch.full((batch_size, frames), VIDEO), after], dim=1)  # fmt: skip
    pixel_values_videos = torch.randn(batch_size, frames, 3, 32, 32, generator=generator)
    return {"input_ids": input_ids, "pixel_values_videos": pixel_values_videos}


def coordinate_targets(input_ids: torch.Tensor, points: int = 3, frames: int = FRAMES, seed: int = 0):
    """Localization / trajectory targets on the last three tokens of each row, -1 elsewhere, some points absent."""
    generator = torch.Generator().manual_seed(seed)
    batch_size, length = input_ids.shape
    localization = torch.full((batch_size, length, 2), -1.0)
    trajectory = torch.full((batch_size, length, points, frames, 2), -1.0)
    localization[:, -3:] = torch.rand(batch_size, 3, 2, generator=generator)
    trajectory[:, -3:] = torch.rand(batch_size, 3, points, frames, 2, generator=generator)
    trajectory[:, -1, 0, :2] = -1.0  # point 0 invisible in the first two frames
    return localization, trajectory


def text_labels(input_ids: torch.Tensor) -> torch.Tensor:
    labels = input_ids.clone()
    labels[labels == VIDEO] = -100
    labels[:, :3] = -100
    return labels


# ---------------------------------------------------------------- config


def test_config_round_trip(tmp_path):
    config = tiny_config(coord_loss_weight=0.25, coord_loss_masked=False, text_config={"num_hidden_layers": 1})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PiteConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert (loaded.coord_loss_weight, loaded.coord_loss_masked, loaded.num_frames) == (0.25, False, FRAMES)
    assert loaded.text_config.num_hidden_layers == 1 and loaded.text_config.hidden_size == 64


@pytest.mark.parametrize(("preset", "hidden", "layers", "intermediate"), [("pite-7b", 4096, 32, 11008), ("pite-13b", 5120, 40, 13824)])  # fmt: skip
def test_presets_have_the_published_shapes(preset, hidden, layers, intermediate):
    config = PiteConfig.from_preset(preset)
    text, vision = config.text_config, config.vision_config
    assert (text.model_type, text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (
        "llama",
        hidden,
        layers,
        intermediate,
    )
    assert text.vocab_size == 32000 + 1 and config.video_token_id == 32000  # Vicuna's vocabulary + <video>
    assert (vision.model_type, vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (
        "clip_vision_model",
        1024,
        24,
        14,
        224,
    )
    assert vision.projection_dim == config.vision_feature_dim == 768
    assert (config.num_frames, config.num_trajectory_points) == (100, 3)
    with torch.device("meta"):  # shapes without allocating weights
        model = PiteForConditionalGeneration(config)
    assert model.model.visual_adapter.weight.shape == (hidden, 768)
    assert model.localization_head.weight.shape == (2, hidden)
    assert model.trajectory_head.weight.shape == (3 * 100 * 2, hidden)
    assert model.lm_head.weight.shape == (32001, hidden)


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="unknown PiTe preset"):
        PiteConfig.from_preset("pite-70b")
    with pytest.raises(Exception, match=r"vision_feature_dim \(10\) must equal vision_config.projection_dim \(24\)"):
        tiny_config(vision_feature_dim=10)
    with pytest.raises(Exception, match=r"video_token_id \(300\) must be a token of the vocabulary \(size 256\)"):
        tiny_config(video_token_id=300)


def test_default_config_is_the_published_7b_shape():
    assert PiteConfig().to_dict() == PiteConfig.from_preset("pite-7b").to_dict()


# ---------------------------------------------------------------- forward


def test_forward_shapes_and_frozen_tower():
    model = tiny_model()
    inputs = video_batch()
    outputs = model(**inputs)
    batch_size, length = inputs["input_ids"].shape
    assert outputs.logits.shape == (batch_size, length, 256)
    assert outputs.localizations.shape == (batch_size, length, 2)
    assert outputs.trajectories.shape == (batch_size, length, 3, FRAMES, 2)
    assert outputs.video_hidden_states.shape == (batch_size, FRAMES, 64)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.model.visual_adapter.parameters())
    assert model.generation_config.suppress_tokens == [VIDEO]


def test_precomputed_features_match_pixels_and_skip_the_tower(monkeypatch):
    model = tiny_model()
    inputs = video_batch()
    with torch.no_grad():
        from_pixels = model(**inputs)
        features = model.get_frame_features(inputs["pixel_values_videos"])
    assert features.shape == (2, FRAMES, 24)
    chunks = [model.get_frame_features(inputs["pixel_values_videos"][:, i : i + 3]) for i in (0, 3)]
    torch.testing.assert_close(torch.cat(chunks, 1), features)  # a feature cache may encode in chunks

    def no_tower(*args, **kwargs):
        raise AssertionError("the vision tower ran")

    monkeypatch.setattr(model.model.vision_tower, "forward", no_tower)
    labels = text_labels(inputs["input_ids"])
    from_features = model(input_ids=inputs["input_ids"], video_features=features, labels=labels)
    torch.testing.assert_close(from_features.logits, from_pixels.logits)
    from_features.loss.backward()  # trains from cached features
    assert model.model.visual_adapter.weight.grad.abs().sum() > 0


def test_image_is_a_one_frame_video():
    model = tiny_model()
    inputs = video_batch(frames=1)
    outputs = model(**inputs)
    assert outputs.video_hidden_states.shape == (2, 1, 64)
    assert outputs.trajectories.shape[-3:] == (3, FRAMES, 2)  # trajectories always span config.num_frames


def test_logits_to_keep_slices_every_head():
    model = tiny_model()
    outputs = model(**video_batch(), logits_to_keep=1)
    assert outputs.logits.shape[1] == outputs.localizations.shape[1] == outputs.trajectories.shape[1] == 1


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_losses_match_a_hand_computation(stage):
    weight = 0.7
    model = tiny_model(coord_loss_weight=weight)
    input_ids = torch.tensor([[1, 42]])  # two tokens: hidden state 0 predicts token 1 and its coordinates
    labels = input_ids.clone()
    localization = torch.tensor([[[-1.0, -1.0], [0.25, 0.75]]])
    trajectory = torch.full((1, 2, 3, FRAMES, 2), -1.0)
    trajectory[0, 1] = torch.rand(3, FRAMES, 2, generator=torch.Generator().manual_seed(1))
    targets = {1: {"localization_targets": localization}, 2: {"trajectory_targets": trajectory}, 3: {}}[stage]
    with torch.no_grad():
        outputs = model(input_ids=input_ids, labels=labels, **targets)

    cross_entropy = -torch.log_softmax(outputs.logits[0, 0], -1)[42]
    torch.testing.assert_close(outputs.lm_loss, cross_entropy)
    if stage == 1:
        l1 = (outputs.localizations[0, 0] - localization[0, 1]).abs().mean()
        torch.testing.assert_close(outputs.localization_loss, l1)
        torch.testing.assert_close(outputs.loss, cross_entropy + weight * l1)
        assert outputs.trajectory_loss is None
    elif stage == 2:
        # lambda / (P * N) * sum over (point, frame) of the L1 of that (x, y)
        per_point_frame = (outputs.trajectories[0, 0] - trajectory[0, 1]).abs().mean(-1)
        l1 = per_point_frame.sum() / (3 * FRAMES)
        torch.testing.assert_close(outputs.trajectory_loss, l1)
        torch.testing.assert_close(outputs.loss, cross_entropy + weight * l1)
        assert outputs.localization_loss is None
    else:
        torch.testing.assert_close(outputs.loss, cross_entropy)
        assert outputs.localization_loss is None and outputs.trajectory_loss is None


@pytest.mark.parametrize("kind", ["localization", "trajectory"])
def test_masked_and_unmasked_differ_exactly_at_missing_targets(kind):
    inputs = video_batch()
    localization, trajectory = coordinate_targets(inputs["input_ids"])
    targets = localization if kind == "localization" else trajectory
    losses = {}
    for masked in (True, False):
        model = tiny_model(coord_loss_masked=masked)
        with torch.no_grad():
            outputs = model(**inputs, **{f"{kind}_targets": targets})
        predictions = (outputs.localizations if kind == "localization" else outputs.trajectories)[:, :-1]
        errors = (predictions - targets[:, 1:]).abs()
        valid = targets[:, 1:] != -1
        expected = errors[valid].mean() if masked else errors.mean()
        losses[masked] = getattr(outputs, f"{kind}_loss")
        torch.testing.assert_close(losses[masked], expected)
    assert not torch.isclose(losses[True], losses[False])
    # without any -1 target the two variants agree
    complete = torch.rand_like(targets)
    agree = [
        getattr(tiny_model(coord_loss_masked=m)(**inputs, **{f"{kind}_targets": complete}), f"{kind}_loss")
        for m in (True, False)
    ]
    torch.testing.assert_close(agree[0], agree[1])


def test_gradient_accumulation_adds_up_to_the_full_batch_loss():
    model = tiny_model()
    inputs = video_batch(batch_size=4)
    labels = text_labels(inputs["input_ids"])
    labels[0, 5:] = -100  # micro-batches with different numbers of label tokens
    localization, trajectory = coordinate_targets(inputs["input_ids"])
    trajectory[1] = -1.0  # and of trajectory targets
    full = model(**inputs, labels=labels, localization_targets=localization, trajectory_targets=trajectory)

    halves = [slice(0, 1), slice(1, 4)]
    num_items = (labels[:, 1:] != -100).sum()
    accumulated = sum(
        model(
            input_ids=inputs["input_ids"][part],
            pixel_values_videos=inputs["pixel_values_videos"][part],
            labels=labels[part],
            localization_targets=localization[part],
            trajectory_targets=trajectory[part],
            num_items_in_batch=num_items,
            num_localization_items_in_batch=count_coordinate_items(localization, masked=True),
            num_trajectory_items_in_batch=count_coordinate_items(trajectory, masked=True),
        ).loss
        for part in halves
    )
    torch.testing.assert_close(accumulated, full.loss)


def test_trainer_item_count_alone_weights_coordinate_means_by_label_share():
    model = tiny_model()
    inputs = video_batch(batch_size=2)
    labels = text_labels(inputs["input_ids"])
    localization, _ = coordinate_targets(inputs["input_ids"])
    num_items = (labels[:, 1:] != -100).sum()
    parts = [
        model(
            input_ids=inputs["input_ids"][[i]],
            pixel_values_videos=inputs["pixel_values_videos"][[i]],
            labels=labels[[i]],
            localization_targets=localization[[i]],
            num_items_in_batch=num_items,
        )  # fmt: skip
        for i in range(2)
    ]
    means = [model(input_ids=inputs["input_ids"][[i]], pixel_values_videos=inputs["pixel_values_videos"][[i]],
                   localization_targets=localization[[i]]).localization_loss for i in range(2)]  # fmt: skip
    shares = [(labels[i, 1:] != -100).sum() / num_items for i in range(2)]
    torch.testing.assert_close(sum(p.localization_loss for p in parts), sum(m * s for m, s in zip(means, shares)))


# ---------------------------------------------------------------- heads, training


def test_trajectory_head_starts_as_the_localization_head():
    model = tiny_model()
    model.init_trajectory_head_from_localization()
    with torch.no_grad():
        outputs = model(**video_batch())
    expected = outputs.localizations[:, :, None, None, :].expand_as(outputs.trajectories)
    torch.testing.assert_close(outputs.trajectories, expected)


@pytest.mark.parametrize("stage", [1, 2])
def test_thirty_steps_on_one_batch_halve_every_active_loss(stage):
    model = tiny_model().train()
    inputs = video_batch()
    localization, trajectory = coordinate_targets(inputs["input_ids"])
    batch = {**inputs, "labels": text_labels(inputs["input_ids"])}
    batch.update({"localization_targets": localization} if stage == 1 else {"trajectory_targets": trajectory})
    active = ["lm_loss", "localization_loss" if stage == 1 else "trajectory_loss"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(30):
        outputs = model(**batch)
        history.append({name: getattr(outputs, name).item() for name in active})
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    final = model(**batch)
    for name in active:
        assert getattr(final, name).item() <= 0.5 * history[0][name], (name, history[0][name], getattr(final, name))


def test_gradient_checkpointing_backward_matches():
    inputs = video_batch()
    batch = {**inputs, "labels": text_labels(inputs["input_ids"])}
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.model.language_model.is_activation_checkpointing
        model(**batch).loss.backward()
        grads.append(model.model.language_model.layers[0].self_attn.q_proj.weight.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


# ---------------------------------------------------------------- generation


def test_greedy_generation_with_cache_equals_without_and_encodes_the_video_once():
    model = tiny_model()
    inputs = video_batch(batch_size=1)
    tower_calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: tower_calls.append(1))
    cached = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=True)
    assert len(tower_calls) == 1
    uncached = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(cached, uncached)
    features = model.get_frame_features(inputs["pixel_values_videos"])
    from_features = model.generate(
        input_ids=inputs["input_ids"], video_features=features, max_new_tokens=12, do_sample=False
    )
    assert torch.equal(from_features, cached)


def test_batched_generation_with_left_padding_matches_single_rows():
    model = tiny_model()
    long, short = video_batch(batch_size=1, text=6, seed=1), video_batch(batch_size=1, text=3, seed=2)
    pad = long["input_ids"].shape[1] - short["input_ids"].shape[1]
    input_ids = torch.cat(
        [long["input_ids"], torch.cat([torch.zeros(1, pad, dtype=torch.long), short["input_ids"]], 1)]
    )
    attention_mask = (torch.arange(input_ids.shape[1]) >= torch.tensor([[0], [pad]])).long()
    pixels = torch.cat([long["pixel_values_videos"], short["pixel_values_videos"]])
    batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels,
                             max_new_tokens=6, do_sample=False)  # fmt: skip
    single = model.generate(**short, max_new_tokens=6, do_sample=False)
    assert torch.equal(batched[1, -6:], single[0, -6:])


# ---------------------------------------------------------------- bad input


def test_bad_inputs_say_what_was_expected_and_what_came():
    model = tiny_model()
    inputs = video_batch()
    too_few = inputs["input_ids"].clone()
    too_few[0, 3] = 7  # one <video> token less
    with pytest.raises(ValueError, match=r"expected 8 <video> tokens .* 2 video\(s\) x 4 frame\(s\), got 7"):
        model(input_ids=too_few, pixel_values_videos=inputs["pixel_values_videos"])
    with pytest.raises(ValueError, match=r"expected 4 <video> tokens .* got 8"):
        model(input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"][:1])
    with pytest.raises(ValueError, match=r"video_features: expected shape \[num_videos, 4 \(or 1 for an image\), 24\], got \[2, 4, 32\]"):  # fmt: skip
        model(input_ids=inputs["input_ids"], video_features=torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match=r"pixel_values_videos: expected shape \[num_videos, 4 \(or 1 for an image\), 3, 32, 32\], got \[2, 3, 3, 32, 32\]"):  # fmt: skip
        model(input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"][:, :3])
    with pytest.raises(ValueError, match=r"expected shape \[num_videos, num_frames, 3, 32, 32\], got \[2, 4, 3, 16, 16\]"):  # fmt: skip
        model.get_frame_features(torch.randn(2, 4, 3, 16, 16))
    with pytest.raises(ValueError, match="got 8 <video> tokens but neither"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="pass one video input, got pixel_values_videos and video_features"):
        model(**inputs, video_features=torch.randn(2, 4, 24))


# ---------------------------------------------------------------- save / load, attention


def test_save_and_auto_load_give_identical_outputs(tmp_path):
    model = tiny_model()
    model.init_trajectory_head_from_localization()
    with torch.no_grad():
        model.trajectory_head.bias.add_(torch.randn_like(model.trajectory_head.bias))
    model.save_pretrained(tmp_path)
    inputs = video_batch()
    # AutoModel too gives the full model with its heads (PiTe's usage: `AutoModel.from_pretrained("pite-7b")`)
    for auto_class in (AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM):
        loaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
        assert type(loaded) is PiteForConditionalGeneration
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            expected, got = model(**inputs), loaded.eval()(**inputs)
        assert torch.equal(got.logits, expected.logits)
        assert torch.equal(got.trajectories, expected.trajectories)
        assert torch.equal(got.localizations, expected.localizations)
    assert isinstance(loaded.model, PiteModel)  # the base model stays importable, as `.model`


def test_attention_backend_is_chosen_without_asking(monkeypatch, tmp_path):
    model = tiny_model()
    implementations = {model.config._attn_implementation, model.model.language_model.config._attn_implementation,
                       model.model.vision_tower.config._attn_implementation}  # fmt: skip
    assert implementations == {"sdpa"}  # CPU here
    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(modeling, "is_flash_attn_2_available", lambda: True)
    assert modeling.default_attn_implementation() == "flash_attention_2"
    monkeypatch.undo()
    model.save_pretrained(tmp_path)
    eager = PiteForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.model.language_model.config._attn_implementation == "eager"
    assert eager.model.vision_tower.config._attn_implementation == "eager"


def test_unset_attention_goes_to_the_machine_default_and_an_explicit_choice_wins(monkeypatch):
    # stand-in for a GPU machine's "flash_attention_2", which cannot be built on CPU
    monkeypatch.setattr(modeling, "default_attn_implementation", lambda: "eager")
    model = tiny_model()
    assert model.config._attn_implementation == "eager"
    assert model.model.language_model.config._attn_implementation == "eager"
    assert model.model.vision_tower.config._attn_implementation == "eager"
    config = tiny_config()
    config._attn_implementation = "sdpa"
    assert PiteForConditionalGeneration(config).model.language_model.config._attn_implementation == "sdpa"


def test_any_decoder_works_as_the_language_model():
    vision = tiny_config().vision_config.to_dict()
    text = {"model_type": "qwen2", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    config = PiteConfig(vision_config=vision, text_config=text, vision_feature_dim=24, num_frames=FRAMES,
                        video_token_id=VIDEO)  # fmt: skip
    model = PiteForConditionalGeneration(config).eval()
    assert type(model.model.language_model).__name__ == "Qwen2Model"
    inputs = video_batch(batch_size=1)
    assert model(**inputs).trajectories.shape == (1, inputs["input_ids"].shape[1], 3, FRAMES, 2)
    assert torch.equal(
        model.generate(**inputs, max_new_tokens=4, do_sample=False),
        model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False),
    )


def test_cached_step_matches_the_full_forward():
    model = tiny_model()
    inputs = video_batch(batch_size=1)
    with torch.no_grad():
        full = model(input_ids=torch.cat([inputs["input_ids"], torch.tensor([[77]])], 1),
                     pixel_values_videos=inputs["pixel_values_videos"])  # fmt: skip
        prefix = model(**inputs, use_cache=True)
        step = model(input_ids=torch.tensor([[77]]), cache=prefix.cache)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1])
    torch.testing.assert_close(step.trajectories[:, -1], full.trajectories[:, -1])


def test_rows_without_a_video_and_bfloat16():
    model = tiny_model().to(torch.bfloat16)
    with_video = video_batch(batch_size=1)
    text_only = torch.randint(
        4, 256, (1, with_video["input_ids"].shape[1]), generator=torch.Generator().manual_seed(3)
    )
    input_ids = torch.cat([with_video["input_ids"], text_only])  # 2 rows, 1 video
    localization, trajectory = coordinate_targets(input_ids)
    outputs = model(input_ids=input_ids, pixel_values_videos=with_video["pixel_values_videos"],
                    labels=text_labels(input_ids), localization_targets=localization,
                    trajectory_targets=trajectory)  # fmt: skip
    assert outputs.logits.dtype == outputs.trajectories.dtype == torch.bfloat16
    assert outputs.video_hidden_states.shape == (1, FRAMES, 64)
    assert torch.isfinite(outputs.loss) and outputs.loss.dtype == torch.float32
