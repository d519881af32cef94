"""Convert the authors' release into one PiTe checkpoint (`pite convert-original`).

The original release (github.com/yliu-cs/PiTe) is Vicuna v1.5 + CLIP ViT-L/14 and three LoRA stage folders,
applied at load time in this order:

1. `vision_adapter.bin` (from the stage-2 folder, else the stage-1 folder): keys `*vision_adapter.{weight,bias}`.
2. For stage 1, 2, 3: `non_lora_trainables.bin` is loaded over the current weights (prefix `base_model.` and,
   when keys start with `model.model.`, one `model.` are stripped; keys the model lacks are ignored), then
   the stage's LoRA (`adapter_config.json` + `adapter_model.{safetensors,bin}`) is merged into the weights.

The original model is a `LlamaForCausalLM` whose inner `model` also holds `vision_adapter` (768 -> hidden),
`localization_projector` (hidden -> 2) and `trajectory_projector` (hidden -> 3*100*2). Here the same merges
are done on state dicts (no peft, no second copy of the model), the video placeholder gets a real token
(`<video>`, appended to the vocabulary), and the result is saved as a PiTe checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, GenerationConfig

from .configuration_pite import PiteConfig
from .hub import create_model_card
from .modeling_pite import PiteForConditionalGeneration
from .processing_pite import PiteProcessor
from .video_processing_pite import PiteVideoProcessor

logger = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
# The original code hard-codes 3 points x 100 frames in its trajectory head.
ORIGINAL_NUM_POINTS, ORIGINAL_NUM_FRAMES = 3, 100
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class OriginalRelease:
    """Where the pieces of an original release lie on disk."""

    base_model: Path
    clip_model: Path
    stages: list[Path]
    vision_adapter: Path | None = None

    def __post_init__(self) -> None:
        self.base_model, self.clip_model = Path(self.base_model), Path(self.clip_model)
        self.stages = [Path(stage) for stage in self.stages]
        for path in (self.base_model, self.clip_model, *self.stages):
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: folder of the original release not found")
        for stage in self.stages:
            if not (stage / "adapter_config.json").is_file():
                raise FileNotFoundError(f"{stage}: no adapter_config.json, is this a LoRA stage folder?")
        if self.vision_adapter is None:
            # the original inference script's lookup: stage 2's copy, else stage 1's
            candidates = [stage / "vision_adapter.bin" for stage in reversed(self.stages[:2])]
            self.vision_adapter = next((path for path in candidates if path.is_file()), None)
        if self.vision_adapter is None or not Path(self.vision_adapter).is_file():
            raise FileNotFoundError(f"vision_adapter.bin not found in {[str(s) for s in self.stages[:2]]}")
        self.vision_adapter = Path(self.vision_adapter)

    @classmethod
    def from_checkpoint_dir(cls, root: str | Path, model_scale: str = "7b") -> OriginalRelease:
        """The folder names the original `inference.py` expects under `checkpoint/`."""
        root = Path(root)
        return cls(
            base_model=root / f"vicuna-{model_scale}-v1.5",
            clip_model=root / "clip-vit-large-patch14",
            stages=[root / f"pite-vicuna-{model_scale}-v1.5-stage{i}" for i in (1, 2, 3)],
        )


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` or pickled `.bin` state dict (the latter with `weights_only=True`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    return state_dict


def load_pretrained_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `save_pretrained` folder, sharded or not, safetensors preferred."""
    folder = Path(folder)
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(folder.glob(pattern))
        if files:
            state_dict = {}
            for file in files:
                state_dict.update(load_weights_file(file))
            return state_dict
    raise FileNotFoundError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")


def _submodule_weights(state_dict: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    """`{param: tensor}` of the keys that name `module` (`...vision_adapter.weight` -> `weight`)."""
    marker = f"{module}."
    return {key.split(marker, 1)[1]: value for key, value in state_dict.items() if marker in key}


def normalize_non_lora_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original loader's key rule: drop `base_model.`, then one `model.` if keys start `model.model.`."""
    state_dict = {key.removeprefix("base_model."): value for key, value in state_dict.items()}
    if any(key.startswith("model.model.") for key in state_dict):
        state_dict = {key.removeprefix("model."): value for key, value in state_dict.items()}
    return state_dict


@dataclass
class LoraStage:
    """The low-rank updates of one stage folder, keyed by the original module name."""

    path: Path
    updates: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)  # name -> (A, B, s)
    fan_in_fan_out: bool = False
    replaced: dict[str, torch.Tensor] = field(default_factory=dict)  # `modules_to_save` copies, by weight key

    @classmethod
    def from_folder(cls, path: str | Path) -> LoraStage:
        path = Path(path)
        config = json.loads((path / "adapter_config.json").read_text())
        if config.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{path}: only LoRA stages can be merged, got peft_type={config['peft_type']!r}")
        for unsupported in ("use_dora", "lora_bias"):
            if config.get(unsupported):
                raise NotImplementedError(f"{path}: {unsupported}=True adapters are not supported")
        files = [path / name for name in ("adapter_model.safetensors", "adapter_model.bin") if (path / name).is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no adapter_model.safetensors or adapter_model.bin")
        weights = load_weights_file(files[0])
        stage = cls(path=path, fan_in_fan_out=bool(config.get("fan_in_fan_out", False)))
        factors: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in weights.items():
            name = key.removeprefix("base_model.model.")
            if ".lora_embedding_" in name or ".lora_magnitude_vector" in name:
                raise NotImplementedError(f"{path}: {key}: only LoRA on Linear layers is supported")
            if ".lora_A." in name or ".lora_B." in name:
                module, rest = name.split(".lora_", 1)
                factors.setdefault(module, {})[rest[0]] = value
            else:  # a `modules_to_save` copy replaces the module's weights
                stage.replaced[name.replace(".modules_to_save.default.", ".")] = value
        for module, pair in factors.items():
            if set(pair) != {"A", "B"}:
                raise ValueError(f"{path}: {module} has lora_{''.join(pair)} but not both lora_A and lora_B")
            rank = pair["A"].shape[0]
            alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
            scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
            stage.updates[module] = (pair["A"], pair["B"], scaling)
        return stage

    def merge_into(self, state_dict: dict[str, torch.Tensor]) -> None:
        """`W += (B @ A) * scaling` in float32, cast back like peft's `merge_and_unload`."""
        for key, value in self.replaced.items():
            _assign(state_dict, key, value, self.path)
        for module, (lora_a, lora_b, scaling) in self.updates.items():
            key = f"{module}.weight"
            if key not in state_dict:
                raise KeyError(f"{self.path}: LoRA targets {module!r}, which the model does not have")
            delta = (lora_b.float() @ lora_a.float()) * scaling
            weight = state_dict[key]
            state_dict[key] = (weight.float() + (delta.T if self.fan_in_fan_out else delta)).to(weight.dtype)


def _pattern_value(pattern: dict[str, float], module: str, default: float) -> float:
    """peft's `alpha_pattern`: the first key that the module name ends with (the rank is the tensors')."""
    return next((value for key, value in pattern.items() if module == key or module.endswith(f".{key}")), default)


def _assign(state_dict: dict[str, torch.Tensor], key: str, value: torch.Tensor, source: Path) -> bool:
    """Load one tensor like `load_state_dict(strict=False)`: unknown keys are skipped, shapes must match."""
    if key not in state_dict:
        logger.warning("%s: %s is not a weight of the model; ignored like the original loader does", source, key)
        return False
    if state_dict[key].shape != value.shape:
        raise ValueError(
            f"{source}: {key} has shape {tuple(value.shape)}, the model has {tuple(state_dict[key].shape)}"
        )
    state_dict[key] = value.to(state_dict[key].dtype)
    return True


def merge_original_weights(release: OriginalRelease, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The original model's weights after every stage, keyed like the original `PiTeLlamaForCausalLM`."""
    state_dict = {key: value.to(dtype) for key, value in load_pretrained_weights(release.base_model).items()}
    hidden_size = state_dict["model.embed_tokens.weight"].shape[1]
    vision_adapter = _submodule_weights(load_weights_file(release.vision_adapter), "vision_adapter")
    if set(vision_adapter) != {"weight", "bias"}:
        raise ValueError(
            f"{release.vision_adapter}: expected vision_adapter.weight and .bias, got {sorted(vision_adapter)}"
        )
    state_dict["model.vision_adapter.weight"] = vision_adapter["weight"].to(dtype)
    state_dict["model.vision_adapter.bias"] = vision_adapter["bias"].to(dtype)
    # the original creates both heads before any stage is loaded; their values must come from a stage
    head_sizes = {"localization_projector": 2, "trajectory_projector": ORIGINAL_NUM_POINTS * ORIGINAL_NUM_FRAMES * 2}
    for module, out_features in head_sizes.items():
        state_dict[f"model.{module}.weight"] = torch.zeros(out_features, hidden_size, dtype=dtype)
        state_dict[f"model.{module}.bias"] = torch.zeros(out_features, dtype=dtype)
    loaded = set()
    for stage_path in release.stages:
        non_lora_path = stage_path / "non_lora_trainables.bin"
        if non_lora_path.is_file():
            for key, value in normalize_non_lora_keys(load_weights_file(non_lora_path)).items():
                if _assign(state_dict, key, value, non_lora_path):
                    loaded.add(key)
        LoraStage.from_folder(stage_path).merge_into(state_dict)
    if "model.localization_projector.weight" not in loaded:
        raise ValueError(
            f"no non_lora_trainables.bin of {[str(s) for s in release.stages]} holds localization_projector"
        )
    if "model.trajectory_projector.weight" not in loaded:
        logger.warning("no stage holds trajectory_projector weights; initialising it from the localization head")
        repeats = ORIGINAL_NUM_POINTS * ORIGINAL_NUM_FRAMES
        for param in ("weight", "bias"):
            localization = state_dict[f"model.localization_projector.{param}"]
            state_dict[f"model.trajectory_projector.{param}"] = localization.repeat(
                repeats, *[1] * (localization.dim() - 1)
            )
    return state_dict


def rename_original_key(key: str) -> str | None:
    """Original `PiTeLlamaForCausalLM` key -> `PiteForConditionalGeneration` key (None: not a weight)."""
    if key.endswith("rotary_emb.inv_freq"):  # a buffer old Llama checkpoints stored; recomputed at load
        return None
    for original, renamed in _EXTRA_MODULE_KEYS.items():
        if key.startswith(original):
            return renamed + key[len(original) :]
    if key.startswith("model."):
        return "model.language_model." + key[len("model.") :]
    return key  # lm_head.weight


_EXTRA_MODULE_KEYS = {
    "model.vision_adapter.": "model.visual_adapter.",
    "model.localization_projector.": "localization_head.",
    "model.trajectory_projector.": "trajectory_head.",
}


def _with_video_token(state_dict: dict[str, torch.Tensor], vocab_size: int) -> None:
    """Grow the embeddings and `lm_head` to `vocab_size` rows, new rows = mean of the old ones."""
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        weight = state_dict[key]
        missing = vocab_size - weight.shape[0]
        if missing > 0:
            mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
            state_dict[key] = torch.cat([weight, mean.expand(missing, -1)])


def _video_processor(clip_model: Path, num_frames: int) -> PiteVideoProcessor:
    """CLIP's own preprocessing (from its `preprocessor_config.json`) applied to every sampled frame."""
    config_path = clip_model / "preprocessor_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{clip_model}: no preprocessor_config.json (CLIP's image preprocessing)")
    clip = json.loads(config_path.read_text())
    keys = ("size", "crop_size", "image_mean", "image_std", "do_center_crop", "do_normalize", "do_resize", "resample")
    return PiteVideoProcessor(num_frames=num_frames, **{key: clip[key] for key in keys if key in clip})


def convert_original(
    release: OriginalRelease,
    output_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    model_name: str | None = None,
    max_shard_size: str = "5GB",
) -> Path:
    """Merge the release into one PiTe checkpoint in `output_dir` (weights, configs, processor, model card)."""
    output_dir = Path(output_dir)
    state_dict = merge_original_weights(release, dtype)
    tokenizer = AutoTokenizer.from_pretrained(release.base_model, extra_special_tokens={"video_token": VIDEO_TOKEN})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # Vicuna has no pad token; LLaVA-style code pads with <unk>
    _with_video_token(state_dict, len(tokenizer))

    text_config = AutoConfig.from_pretrained(release.base_model)
    text_config.vocab_size = state_dict["model.embed_tokens.weight"].shape[0]
    text_config.pad_token_id = tokenizer.pad_token_id
    clip_weights = load_pretrained_weights(release.clip_model)
    vision_config = CLIPVisionConfig.from_pretrained(release.clip_model)
    # a full CLIPModel config keeps projection_dim at its top level; the weights say what it is
    vision_config.projection_dim = clip_weights["visual_projection.weight"].shape[0]
    config = PiteConfig(
        vision_config=vision_config,
        text_config=text_config,
        vision_feature_dim=state_dict["model.vision_adapter.weight"].shape[1],
        num_frames=ORIGINAL_NUM_FRAMES,
        num_trajectory_points=ORIGINAL_NUM_POINTS,
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
    )
    config.dtype = dtype

    renamed = {}
    for key, value in state_dict.items():
        new_key = rename_original_key(key)
        if new_key is not None:
            renamed[new_key] = value
    for key, value in clip_weights.items():
        if key.startswith(("vision_model.", "visual_projection.")):  # a full CLIPModel also has the text tower
            renamed[f"model.vision_tower.{key}"] = value.to(dtype)
    with torch.device("meta"):
        model = PiteForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(renamed, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the merged weights do not fit PiTe: missing {missing}, unexpected {unexpected}")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # the original inference script's decoding
        do_sample=True,
        temperature=0.05,
        num_beams=1,
        max_new_tokens=1024,
        suppress_tokens=[config.video_token_id],
    )
    processor = PiteProcessor(
        video_processor=_video_processor(release.clip_model, ORIGINAL_NUM_FRAMES), tokenizer=tokenizer
    )
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(output_dir)
    create_model_card(
        model_name or output_dir.name,
        base_model=[_hub_id(release.base_model.name), _hub_id(release.clip_model.name)],
        description="Converted from the authors' LoRA release with `pite convert-original` "
        f"(stages applied in order: {', '.join(stage.name for stage in release.stages)}).",
    ).save(output_dir / "README.md")
    return output_dir


def _hub_id(folder_name: str) -> str:
    """The Hub id of a base model folder named like its repository (`vicuna-7b-v1.5` -> `lmsys/vicuna-7b-v1.5`)."""
    for prefix, owner in (("vicuna-", "lmsys"), ("clip-vit-", "openai")):
        if folder_name.startswith(prefix):
            return f"{owner}/{folder_name}"
    return folder_name


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-original",
        help="merge the authors' LoRA stage folders into one PiTe checkpoint",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--checkpoint-dir", type=Path, help="folder with the original inference.py layout")
    parser.add_argument("--model-scale", default="7b", choices=["7b", "13b"])
    parser.add_argument("--base", type=Path, help="Vicuna v1.5 folder (overrides --checkpoint-dir)")
    parser.add_argument("--clip", type=Path, help="CLIP ViT-L/14 folder (overrides --checkpoint-dir)")
    parser.add_argument("--stages", type=Path, nargs="+", help="stage folders in order (overrides --checkpoint-dir)")
    parser.add_argument("--vision-adapter", type=Path, help="vision_adapter.bin (default: stage 2's, else stage 1's)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the converted checkpoint to")
    parser.add_argument("--dtype", default="float16", choices=sorted(_DTYPES))
    parser.add_argument("--model-name", help="title of the model card (default: the output folder's name)")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.checkpoint_dir is not None:
        release = OriginalRelease.from_checkpoint_dir(args.checkpoint_dir, args.model_scale)
        base, clip, stages = (
            args.base or release.base_model,
            args.clip or release.clip_model,
            args.stages or release.stages,
        )
    elif args.base and args.clip and args.stages:
        base, clip, stages = args.base, args.clip, args.stages
    else:
        raise SystemExit("pass --checkpoint-dir, or all of --base, --clip and --stages")
    release = OriginalRelease(base, clip, stages, args.vision_adapter)
    output = convert_original(
        release, args.output, dtype=_DTYPES[args.dtype], model_name=args.model_name, max_shard_size=args.max_shard_size
    )
    print(f"converted checkpoint written to {output}")
    return 0
