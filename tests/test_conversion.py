"""`pite convert-original` against the original loading procedure, on a tiny release in the original layout."""

import json
import logging

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionModelWithProjection,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from modeling_pite.conversion import (
    LoraStage,
    OriginalRelease,
    convert_original,
    merge_original_weights,
    normalize_non_lora_keys,
)
from modeling_pite.modeling_pite import PiteForConditionalGeneration
from modeling_pite.processing_pite import PiteProcessor

HIDDEN, FEATURE_DIM, TRAJECTORY_OUT = 32, 16, 3 * 100 * 2
WORDS = "a chat between curious user and an artificial intelligence assistant . the gives helpful , detailed polite"
WORDS += " answers to 's questions USER: ASSISTANT: what is red circle doing ? it moves left"
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# per stage: LoRA targets (the original's find_all_linear_names may hit the adapter and heads), options,
# the extra modules its non_lora_trainables.bin holds, and the adapter file format
STAGES = [
    (LLAMA_LINEARS, {}, ["localization_projector"], True),
    (LLAMA_LINEARS + ["vision_adapter", "localization_projector"], {}, ["trajectory_projector"], False),
    (LLAMA_LINEARS + ["trajectory_projector"], {"use_rslora": True}, ["trajectory_projector"], True),
]


class OriginalPiteLlama(LlamaForCausalLM):
    """The original model's module layout: Llama + adapter and heads inside the inner `model`."""

    def __init__(self, config):
        super().__init__(config)
        self.model.vision_adapter = nn.Linear(FEATURE_DIM, config.hidden_size)
        self.model.localization_projector = nn.Linear(config.hidden_size, 2)
        self.model.trajectory_projector = nn.Linear(config.hidden_size, TRAJECTORY_OUT)


def _tokenizer() -> PreTrainedTokenizerFast:
    """A Vicuna-like tokenizer without a `<video>` token (the original used the id -200 instead)."""
    vocab = {token: index for index, token in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(WORDS.split())])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    for param in module.parameters():
        param.data = torch.randn(param.shape, generator=generator) * 0.2


def _original_release(root):
    """Write Vicuna, CLIP and three stage folders the way the authors' training code saved them."""
    generator = torch.Generator().manual_seed(0)
    tokenizer = _tokenizer()
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config).save_pretrained(root / "vicuna-7b-v1.5")
    tokenizer.save_pretrained(root / "vicuna-7b-v1.5")
    # openai/clip-vit-large-patch14 is a full CLIPModel (text tower too); the original reads its vision half
    clip_config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": FEATURE_DIM},  # as in the real config.json
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64},
        projection_dim=FEATURE_DIM,
    )  # fmt: skip
    CLIPModel(clip_config).save_pretrained(root / "clip-vit-large-patch14")
    (root / "clip-vit-large-patch14" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": {"height": 32, "width": 32},
                "size": {"shortest_edge": 32},
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
            }
        )
    )
    scratch = OriginalPiteLlama(llama_config)
    stages = []
    for index, (targets, options, non_lora_modules, safetensors) in enumerate(STAGES, start=1):
        stage = root / f"pite-vicuna-7b-v1.5-stage{index}"
        peft_model = get_peft_model(
            scratch, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets, **options)
        )
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.data = torch.randn(param.shape, generator=generator) * 0.1
        peft_model.save_pretrained(stage, safe_serialization=safetensors)
        scratch = peft_model.unload()
        non_lora = {}
        for module in non_lora_modules:
            layer = getattr(scratch.model, module)
            _randomize(layer, generator)
            non_lora.update({f"base_model.model.model.{module}.{k}": v.clone() for k, v in layer.state_dict().items()})
        torch.save(non_lora, stage / "non_lora_trainables.bin")
        stages.append(stage)
    for stage in stages[:2]:  # stage 2's copy wins, as in the original inference script
        adapter = nn.Linear(FEATURE_DIM, HIDDEN)
        _randomize(adapter, generator)
        torch.save(
            {f"model.vision_adapter.{k}": v for k, v in adapter.state_dict().items()}, stage / "vision_adapter.bin"
        )
    return OriginalRelease.from_checkpoint_dir(root, "7b")


def _load_the_original_way(release: OriginalRelease) -> OriginalPiteLlama:
    """The authors' loading procedure, rebuilt with peft: adapter file, then per stage non-LoRA + merge."""
    model = OriginalPiteLlama.from_pretrained(release.base_model, dtype=torch.float32)
    adapter_path = release.stages[1] / "vision_adapter.bin"  # inference.py: stage 2's, else stage 1's
    adapter = torch.load(
        adapter_path if adapter_path.exists() else release.stages[0] / "vision_adapter.bin", weights_only=True
    )
    model.model.vision_adapter.load_state_dict({k.split("vision_adapter.")[1]: v for k, v in adapter.items()})
    for stage in release.stages:
        non_lora = torch.load(stage / "non_lora_trainables.bin", weights_only=True)
        model.load_state_dict(normalize_non_lora_keys(non_lora), strict=False)
        model = PeftModel.from_pretrained(model, stage).merge_and_unload()
    return model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _original_release(tmp_path_factory.mktemp("original"))


@pytest.fixture(scope="module")
def reference(release):
    return _load_the_original_way(release)


def test_merged_weights_equal_peft_merges_stage_by_stage(release, reference):
    merged = merge_original_weights(release, dtype=torch.float32)
    expected = reference.state_dict()
    assert set(merged) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6, msg=key)


def test_lora_stage_reads_peft_keys_and_scaling(release):
    stage1 = LoraStage.from_folder(release.stages[0])
    assert "model.layers.1.mlp.down_proj" in stage1.updates
    lora_a, lora_b, scaling = stage1.updates["model.layers.0.self_attn.q_proj"]
    assert lora_a.shape == (4, HIDDEN) and lora_b.shape == (HIDDEN, 4) and scaling == 2.0
    stage3 = LoraStage.from_folder(release.stages[2])
    assert stage3.updates["model.trajectory_projector"][2] == pytest.approx(8 / 2)  # rsLoRA: alpha / sqrt(r)


def test_original_key_rules():
    keys = {"base_model.model.model.vision_adapter.weight": 0, "base_model.model.lm_head.weight": 1}
    assert set(normalize_non_lora_keys(keys)) == {"model.vision_adapter.weight", "lm_head.weight"}
    assert set(normalize_non_lora_keys({"model.trajectory_projector.bias": 0})) == {"model.trajectory_projector.bias"}


def test_missing_pieces_are_named(tmp_path, release, caplog):
    with pytest.raises(FileNotFoundError, match="stage3"):
        OriginalRelease(release.base_model, release.clip_model, [*release.stages[:2], tmp_path / "stage3"])
    bad_stage = tmp_path / "stage"
    bad_stage.mkdir()
    (bad_stage / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 8}))
    with pytest.raises(FileNotFoundError, match="adapter_model"):
        LoraStage.from_folder(bad_stage)
    torch.save({"base_model.model.model.unknown_head.weight": torch.zeros(2)}, bad_stage / "non_lora_trainables.bin")
    (bad_stage / "adapter_config.json").write_text((release.stages[0] / "adapter_config.json").read_text())
    (bad_stage / "adapter_model.safetensors").write_bytes(
        (release.stages[0] / "adapter_model.safetensors").read_bytes()
    )
    with caplog.at_level(logging.WARNING):
        merge_original_weights(OriginalRelease(release.base_model, release.clip_model, [*release.stages, bad_stage]))
    assert "model.unknown_head.weight is not a weight of the model" in caplog.text


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    return convert_original(release, tmp_path_factory.mktemp("converted") / "pite-7b", dtype=torch.float32)


def test_converted_logits_equal_the_original_model(release, reference, converted):
    model = PiteForConditionalGeneration.from_pretrained(converted, dtype=torch.float32).eval()
    processor = PiteProcessor.from_pretrained(converted)
    tokenizer = processor.tokenizer
    num_frames = model.config.num_frames
    before = tokenizer("a chat between curious user and an artificial intelligence assistant . USER:").input_ids
    after = tokenizer("what is the red circle doing ? ASSISTANT:").input_ids
    video_ids = [model.config.video_token_id] * num_frames
    pixel_values = torch.randn(1, num_frames, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model(input_ids=torch.tensor([before + video_ids + after]), pixel_values_videos=pixel_values)
        clip = CLIPVisionModelWithProjection.from_pretrained(release.clip_model).eval()
        features = reference.model.vision_adapter(clip(pixel_values=pixel_values[0]).image_embeds)
        embed = reference.model.embed_tokens
        inputs_embeds = torch.cat([embed(torch.tensor(before)), features, embed(torch.tensor(after))])[None]
        hidden = reference.model(inputs_embeds=inputs_embeds).last_hidden_state
        expected_logits = reference.lm_head(hidden)
    vocab_size = expected_logits.shape[-1]
    assert output.logits.shape[-1] == vocab_size + 1  # `<video>` was appended
    torch.testing.assert_close(output.logits[..., :vocab_size], expected_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.localizations, reference.model.localization_projector(hidden), rtol=0, atol=1e-5)
    expected_trajectories = reference.model.trajectory_projector(hidden).view(1, -1, 3, num_frames, 2)
    torch.testing.assert_close(output.trajectories, expected_trajectories, rtol=0, atol=1e-5)


def test_converted_folder_is_complete(converted):
    names = {path.name for path in converted.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "README.md",
        "processor_config.json",
        "chat_template.jinja",
    } <= names
    assert any(name.endswith(".safetensors") for name in names)
    processor = PiteProcessor.from_pretrained(converted)
    config = json.loads((converted / "config.json").read_text())
    assert processor.video_token_id == config["video_token_id"] == len(processor.tokenizer) - 1
    assert processor.video_processor.num_frames == config["num_frames"] == 100
    assert processor.video_processor.crop_size["height"] == 32  # CLIP's preprocessing carried over
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what ?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt.endswith("USER: <video>\nwhat ? ASSISTANT:")
    assert "Stage 2: pixel-temporal alignment" in (converted / "README.md").read_text()


def test_convert_original_command(release, tmp_path):
    from modeling_pite.cli import main

    root = release.base_model.parent
    assert (
        main(
            [
                "convert-original",
                "--checkpoint-dir",
                str(root),
                "--output",
                str(tmp_path / "out"),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "config.json").is_file()
