"""Training's augmentation: the evaluation preset's decoding and normalisation with random changes
between them. Serving never runs it, so it stays out of the .mar (handlers/presets.py is what ships)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from handlers.presets import PresetConfig, decode_image, fit_to_input, to_tensor


class RandomBackdrop:
    """Replaces the catalogue's white background with a grey or beige studio backdrop, at random.

    Catalogue photos are mostly shot on white; photos of returns (and older catalogue shots) are
    often on grey or beige, which a model trained on white alone mistakes for part of the product.
    Near-white pixels blend into a vertically shaded backdrop through a soft mask (no hard edges).
    """

    def __init__(self, p: float = 0.3, levels: tuple[int, int] = (150, 235)) -> None:
        self.p = p
        self.levels = levels

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return image
        pixels = np.asarray(image, dtype=np.float32)
        mask = np.clip((pixels.min(axis=2, keepdims=True) - 215.0) / 25.0, 0.0, 1.0)
        level = float(torch.empty(()).uniform_(*self.levels))
        tint = torch.empty(3).uniform_(-8.0, 8.0).numpy()
        shade = np.linspace(12.0, -12.0, pixels.shape[0], dtype=np.float32)[:, None, None] * float(torch.rand(()))
        backdrop = np.clip(level + tint + shade, 0.0, 255.0)
        return Image.fromarray((pixels * (1.0 - mask) + backdrop * mask).round().astype(np.uint8))


AUTO_AUGMENT = {"ta_wide": v2.TrivialAugmentWide, "ra": v2.RandAugment}


class ClassificationPresetTrain:
    """The eval preset plus augmentations that suit product photos on a plain background, optionally
    with torchvision's policy augmentation (TrivialAugmentWide or RandAugment) and random erasing,
    placed as in torchvision's references/classification/presets.py."""

    def __init__(
        self,
        config: PresetConfig,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        hflip_prob: float = 0.5,
        jitter: float = 0.2,
        backdrop_prob: float = 0.3,
        auto_augment: str | None = None,
        random_erase: float = 0.0,
    ) -> None:
        self.config = config
        size = (config.height, config.width)
        ratio = config.width / config.height
        steps = [
            RandomBackdrop(backdrop_prob),
            v2.RandomResizedCrop(size, scale=crop_scale, ratio=(ratio * 0.85, ratio / 0.85)),
            v2.RandomHorizontalFlip(hflip_prob),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        ]
        if auto_augment:
            # The catalogue's white, not black, fills what a rotation or shear uncovers.
            steps.append(AUTO_AUGMENT[auto_augment](fill=255))
        self.augment = v2.Compose(steps)
        # Erasing works on the normalised tensor (its random values are noise in that space).
        self.erase = v2.RandomErasing(random_erase) if random_erase else None

    def __call__(self, data: bytes) -> torch.Tensor:
        image = fit_to_input(decode_image(data), self.config)
        tensor = to_tensor(self.augment(image), self.config)
        return self.erase(tensor) if self.erase else tensor
