"""PiteTrainer: `transformers.Trainer` that logs each PiTe loss term and normalises them exactly.

Why not TRL's `SFTTrainer`: it swaps in a fused LM-head loss that never runs PiTe's coordinate heads.
Plain `Trainer` calls the model's real forward, whose loss is `lm_loss + lambda * (localization_loss +
trajectory_loss)` over the terms whose targets the collator gave (stage 1: localization, 2: trajectory,
3: CE only).

Gradient accumulation and several processes: Trainer passes `num_items_in_batch` (label tokens of the
whole optimizer step, summed over processes) so cross-entropy is a sum over the step divided by one
count. `PiteTrainer` does the same for the coordinate terms: it counts their target values over the
step's micro-batches and processes (`count_coordinate_items`) and hands the totals to the model as
`num_localization_items_in_batch` / `num_trajectory_items_in_batch`. Batch 2 x accumulation 1 and
batch 1 x accumulation 2 then give the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from .modeling_pite import count_coordinate_items

__all__ = ["PiteTrainer", "PiteTrainingArguments"]

LOSS_COMPONENTS = ("lm_loss", "localization_loss", "trajectory_loss")
# targets in a batch -> the model argument that takes their count over the optimizer step
_COORDINATE_COUNTS = {
    "localization_targets": "num_localization_items_in_batch",
    "trajectory_targets": "num_trajectory_items_in_batch",
}


@dataclass
class PiteTrainingArguments(TrainingArguments):
    """`TrainingArguments` with PiTe's published recipe as defaults (AdamW, lr 1e-4, cosine, warmup 3%).

    `bf16` left unset turns on where a CUDA device supports it and stays off on CPU. `use_cpu` turns on by
    itself on a machine without an accelerator, so several processes launched there train together over
    gloo instead of each alone. The collator needs the raw records, so `remove_unused_columns` defaults to False.
    """

    learning_rate: float = 1e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.03
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; unset: on where CUDA supports it."}
    )
    remove_unused_columns: bool = False
    save_safetensors: bool = True

    def __post_init__(self):
        if not self.use_cpu and not _has_accelerator():
            # also what makes torchrun-launched processes on a CPU machine join one gloo group (MULTI_CPU)
            self.use_cpu = True
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not self.use_cpu)
        super().__post_init__()


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


class PiteTrainer(Trainer):
    """Trainer for the three PiTe stages; the stage is set by the collator's targets and the model's LoRA."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._component_totals: dict[str, torch.Tensor] = {}
        self._components_logged_step = 0
        self._skipped_videos = torch.zeros((), dtype=torch.long)

    @property
    def _coord_loss_masked(self) -> bool:
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        return model.config.coord_loss_masked

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """Trainer's micro-batches of one optimizer step, each given the step's coordinate target counts."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if num_items_in_batch is None or not batch_samples:
            return batch_samples, num_items_in_batch  # losses stay per micro-batch means, Trainer averages them
        masked = self._coord_loss_masked
        for key, count_name in _COORDINATE_COUNTS.items():
            if key not in batch_samples[0]:
                continue
            count = sum(count_coordinate_items(batch[key], masked) for batch in batch_samples).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
            count = count.clamp(min=1)  # a step without a single target contributes 0, not 0/0
            for batch in batch_samples:
                batch[count_name] = count
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        skipped = inputs.pop("num_skipped_videos", None)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            if skipped is not None:
                self._skipped_videos += int(skipped)
            self._accumulate_components(outputs, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _accumulate_components(self, outputs, num_items_in_batch) -> None:
        """Add each term scaled like Trainer scales `loss`, so the logged terms add up like the logged loss."""
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        else:
            scale = 1 / self.current_gradient_accumulation_steps
        for name in LOSS_COMPONENTS:
            value = getattr(outputs, name, None)
            if value is not None:
                total = self._component_totals.get(name, torch.zeros((), device=value.device))
                self._component_totals[name] = total + value.detach().float() * scale

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get each loss term (mean per optimizer step over all processes) and skipped videos."""
        if "loss" in logs:
            steps = max(self.state.global_step - self._components_logged_step, 1)
            for name in LOSS_COMPONENTS:
                if name in self._component_totals:
                    total = self.accelerator.gather(self._component_totals[name].reshape(1)).mean()
                    logs[name] = round(total.item() / steps, 6)
                    self._component_totals[name] = torch.zeros_like(self._component_totals[name])
            self._components_logged_step = self.state.global_step
            skipped = self.accelerator.gather(self._skipped_videos.to(self.args.device).reshape(1)).sum()
            logs["skipped_videos"] = int(skipped)
        super().log(logs, start_time)
