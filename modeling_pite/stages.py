"""PiTe's three training stages as a LoRA chain: merge the previous stage, add a fresh LoRA, train, save.

| stage | data | loss | trained |
|---|---|---|---|
| 1 | Localized Narratives images | CE + lambda * L1(localization) | LoRA, visual adapter, localization head |
| 2 | trajectories (PiTe-143k style) | CE + lambda * L1(trajectory) | fresh LoRA, visual adapter, trajectory head |
| 3 | video instruction dialogues | CE | fresh LoRA (adapter frozen) |
| 3 + `trajectory_data_files` | dialogues + trajectory records | CE + lambda * L1(trajectory) | fresh LoRA, trajectory head |

LoRA goes on the language model's linear layers only (never the CLIP tower or the heads), r=64,
alpha=128, dropout 0.05 by default. The adapter and the stage's head train fully (`modules_to_save`);
stage 3 keeps the adapter frozen, as the code base PiTe grew from does (VTimeLLM's stage-3 script sets
`--freeze_mm_mlp_adapter`) and the original release reflects (its inference loads `vision_adapter.bin` from
stage 2 or 1, never 3). Training it there would also move the features the trajectory head was fitted to.
At stage 2 the trajectory head starts as the stage-1 localization head repeated P*N times (the paper's
ablation shows it matters; `init_trajectory_head=False` turns it off).

Stage 3's fresh LoRA moves the hidden states the stage-2 trajectory head reads, and with CE alone nothing
holds them where the head expects them. `trajectory_data_files` (not in the paper) mixes trajectory records
into stage 3 and keeps their loss and the head training, so the final model still answers with trajectories.

Each stage's output folder holds the merged model (`AutoModelForImageTextToText.from_pretrained(dir)`)
with its processor, `adapter/` (the LoRA + trained modules, loadable with `PeftModel.from_pretrained`
on the stage's base) and `non_lora_trainables.safetensors` (the trained non-LoRA weights, as the
original release ships them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

__all__ = [
    "LANGUAGE_MODEL_LINEAR_LAYERS",
    "STAGES",
    "StageArguments",
    "StageSpec",
    "merge_adapter",
    "prepare_stage_model",
    "save_stage",
]

logger = logging.getLogger(__name__)

# `re.fullmatch` on module names: the decoder's attention and MLP projections, nothing in the CLIP tower.
LANGUAGE_MODEL_LINEAR_LAYERS = r"model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
NON_LORA_TRAINABLES = "non_lora_trainables.safetensors"


@dataclass(frozen=True)
class StageSpec:
    """What a stage trains: which coordinate targets the collator builds, which modules train fully."""

    coordinate_targets: str | None
    modules_to_save: tuple[str, ...]


STAGES = {
    1: StageSpec("localization", ("visual_adapter", "localization_head")),
    2: StageSpec("trajectory", ("visual_adapter", "trajectory_head")),
    3: StageSpec(None, ()),
}


@dataclass
class StageArguments:
    """Stage and LoRA settings of `examples/train_stage.py`."""

    stage: int = field(metadata={"help": "1: localization, 2: trajectories, 3: instruction tuning."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=LANGUAGE_MODEL_LINEAR_LAYERS, metadata={"help": "Regex (full match) of the module names LoRA wraps."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained fully; default: the adapter and the stage's head."}
    )
    init_trajectory_head: bool = field(
        default=True, metadata={"help": "Stage 2: start the trajectory head from the localization head."}
    )
    previous_adapter: str | None = field(
        default=None, metadata={"help": "A previous stage's `adapter/` to merge into the loaded model first."}
    )
    trajectory_data_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Stage 3: trajectory records (stage-2 format) mixed into the dialogues, trained with the "
            "trajectory loss and head, so instruction tuning keeps the trajectory head working (not in the paper)."
        },
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.trajectory_data_files and self.stage != 3:
            raise ValueError(
                f"trajectory_data_files mixes trajectory records into stage 3; stage {self.stage} takes its data "
                "as data_files"
            )
        if self.modules_to_save is None:
            self.modules_to_save = list(STAGES[self.stage].modules_to_save)
            if self.trajectory_data_files:
                self.modules_to_save.append("trajectory_head")

    @property
    def coordinate_targets(self) -> str | None:
        return "trajectory" if self.trajectory_data_files else STAGES[self.stage].coordinate_targets

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            modules_to_save=list(self.modules_to_save),
            bias="none",
        )


def merge_adapter(model, adapter_path: str | Path):
    """Fold a stage's LoRA (and its trained modules) into `model`'s weights: the chain's merge step."""
    return PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()


def prepare_stage_model(model, args: StageArguments) -> PeftModel:
    """The model a stage trains: previous LoRA merged, stage-2 head initialised, a fresh LoRA added."""
    if args.previous_adapter is not None:
        model = merge_adapter(model, args.previous_adapter)
    if args.stage == 2 and args.init_trajectory_head:
        model.init_trajectory_head_from_localization()
    return get_peft_model(model, args.lora_config())


def save_stage(trainer, output_dir: str | Path, processor=None) -> None:
    """Write the stage's adapter, its non-LoRA trainables and the merged model (+ processor) to `output_dir`.

    The full state dict is gathered through accelerate, so DeepSpeed ZeRO-3 and FSDP shards are
    assembled; the main process rebuilds the LoRA model on CPU from it when training held only shards.
    Call after training: the trained model is merged in place.
    """
    output_dir = Path(output_dir)
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model_wrapped)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    peft_model = accelerator.unwrap_model(trainer.model)
    if _is_sharded(accelerator):
        peft_model = _rebuild_on_cpu(peft_model, state_dict)
    peft_model.save_pretrained(output_dir / "adapter")
    merged = peft_model.merge_and_unload()
    trained = tuple(peft_model.peft_config["default"].modules_to_save or ())
    save_file(
        {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in merged.state_dict().items()
            if any(part in trained for part in name.split("."))
        },
        output_dir / NON_LORA_TRAINABLES,
        metadata={"format": "pt"},
    )
    merged.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    logger.info("Stage saved to %s (merged model, adapter/, %s)", output_dir, NON_LORA_TRAINABLES)
    accelerator.wait_for_everyone()


def _is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3


def _rebuild_on_cpu(peft_model: PeftModel, state_dict: dict[str, torch.Tensor]) -> PeftModel:
    from transformers.initialization import no_init_weights

    base = peft_model.get_base_model()
    with no_init_weights():
        fresh = type(base)(base.config)
    fresh = get_peft_model(fresh, peft_model.peft_config["default"])
    fresh.load_state_dict(state_dict)
    return fresh
