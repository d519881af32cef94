"""Pretrain a tiny CLIP vision tower on rendered still scenes: the demo's stand-in for CLIP's pretraining.

PiTe reads one frozen, *pretrained* CLIP embedding per frame, and pretraining is what puts "which object,
where" into that embedding. A randomly initialised tower's projected CLS token does not carry it (a ridge
probe to a lone object's centre does no better than the mean centre; docs/synthetic_world.md), and from
such features no PiTe stage can learn trajectories. The demo may not download CLIP, so it pretrains its
tower the way a supervised backbone is pretrained: on freshly rendered scenes of the world's objects (their
own random stream, none of them a training or test video or image), a throwaway linear head predicts which
of the world's object names are present and where each one's centre is. The tower is then frozen, as PiTe
freezes CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .sampling import sample_image_spec
from .world import COLORS, SHAPES

__all__ = ["TowerPretrainingReport", "pretrain_vision_tower", "render_scenes"]

OBJECT_NAMES = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)


@dataclass
class TowerPretrainingReport:
    """Held-out quality of the pretrained tower, measured with the throwaway head on unseen scenes."""

    centre_l1: float  # mean |predicted - true| object centre, [0, 1] frame units, present objects only
    mean_centre_l1: float  # the same for always predicting the training scenes' mean centre
    # presence calls per (scene, object name); most names are absent from a scene, so accuracy would mostly
    # count right "absent" calls: recall and precision of "present" say what the embedding tells apart
    presence_recall: float
    presence_precision: float
    final_loss: float

    def __str__(self) -> str:
        return (
            f"held-out object-centre L1 {self.centre_l1:.3f} (mean-centre baseline {self.mean_centre_l1:.3f}), "
            f"presence recall {100 * self.presence_recall:.1f}%, precision {100 * self.presence_precision:.1f}%"
        )


def render_scenes(
    num_scenes: int, side: int, seed: int, num_objects: tuple[int, int] = (1, 3)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`num_scenes` random still scenes: frames `[S, side, side, 3]` uint8, presence `[S, K]` and centres
    `[S, K, 2]` in `[0, 1]` (zero where absent) for the K = len(OBJECT_NAMES) object names."""
    rng = np.random.default_rng([seed, 0x70E2])  # a stream no world split uses
    frames = np.empty((num_scenes, side, side, 3), dtype=np.uint8)
    presence = np.zeros((num_scenes, len(OBJECT_NAMES)), dtype=np.float32)
    centres = np.zeros((num_scenes, len(OBJECT_NAMES), 2), dtype=np.float32)
    for i in range(num_scenes):
        spec = sample_image_spec(rng, f"scene_{i}", side, side, num_objects)
        frames[i] = spec.render_frame(0.0)
        for obj in spec.objects:
            k = OBJECT_NAMES.index(obj.name)
            presence[i, k] = 1.0
            centres[i, k] = np.clip(obj.center(0.0) / side, 0.0, 1.0)
    return frames, presence, centres


def _pixel_values(frames: np.ndarray, image_mean, image_std) -> torch.Tensor:
    """uint8 `[S, H, W, 3]` -> normalised `[S, 3, H, W]` (frames are rendered at the tower's size, so the
    processor's resize and crop are identities and only rescale + normalise remain)."""
    pixels = torch.from_numpy(frames).float().div_(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def pretrain_vision_tower(
    tower: nn.Module,
    image_mean,
    image_std,
    *,
    num_scenes: int = 8000,
    num_eval_scenes: int = 500,
    steps: int = 3000,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    num_objects: tuple[int, int] = (1, 3),
    seed: int = 0,
    progress: bool = True,
) -> TowerPretrainingReport:
    """Train `tower` (a `CLIPVisionModelWithProjection`) in place to put object presence and position into
    its `image_embeds` (scenes of `num_objects` objects, as in the world's videos); returns its held-out
    quality. Deterministic by `seed`."""
    side = tower.config.image_size
    frames, presence, centres = render_scenes(num_scenes + num_eval_scenes, side, seed, num_objects)
    pixels = _pixel_values(frames, image_mean, image_std)
    presence, centres = torch.from_numpy(presence), torch.from_numpy(centres)
    train, held_out = slice(0, num_scenes), slice(num_scenes, None)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(tower.config.projection_dim, 3 * len(OBJECT_NAMES))  # per name: presence logit, x, y

    def predict(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = head(tower(pixel_values=batch).image_embeds).view(len(batch), len(OBJECT_NAMES), 3)
        return outputs[..., 0], outputs[..., 1:].sigmoid()

    def centre_l1(predicted: torch.Tensor, true: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return ((predicted - true).abs().sum(-1) * present).sum() / present.sum().clamp(min=1) / 2

    was_frozen = {name: not param.requires_grad for name, param in tower.named_parameters()}
    tower.requires_grad_(True).train()
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="pretraining the vision tower", disable=not progress)
    for _ in bar:
        index = torch.randint(num_scenes, (batch_size,), generator=generator)
        logits, predicted = predict(pixels[train][index])
        presence_loss = nn.functional.binary_cross_entropy_with_logits(logits, presence[index])
        loss = presence_loss + centre_l1(predicted, centres[index], presence[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    tower.eval()
    for name, param in tower.named_parameters():  # back to the caller's freezing (PiTe freezes the tower)
        param.requires_grad_(not was_frozen[name])

    with torch.inference_mode():
        logits, predicted = predict(pixels[held_out])
        present = presence[held_out]
        mean_centre = (centres[train] * presence[train, :, None]).sum((0, 1)) / presence[train].sum()
        called = logits > 0
        hits = (called & (present > 0)).sum().item()
        return TowerPretrainingReport(
            centre_l1=round(centre_l1(predicted, centres[held_out], present).item(), 4),
            mean_centre_l1=round(centre_l1(mean_centre.expand_as(predicted), centres[held_out], present).item(), 4),
            presence_recall=round(hits / max(present.sum().item(), 1), 4),
            presence_precision=round(hits / max(called.sum().item(), 1), 4),
            final_loss=round(loss.item(), 4),
        )
