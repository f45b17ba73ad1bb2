"""ODIN: temperature scaling plus input pre-processing.

Paper: S. Liang, Y. Li and R. Srikant, "Enhancing The Reliability of Out-of-distribution Image
Detection in Neural Networks", ICLR 2018. https://arxiv.org/abs/1706.02690

Each image is moved one signed-gradient step of size ``epsilon`` towards a higher
temperature-scaled softmax score of its predicted class,
``x' = x - epsilon * sign(grad_x CE(f(x) / T, argmax f(x)))``, and scored by
``-max softmax(f(x') / T)`` (higher = more OOD). ``epsilon`` is in the [0, 1] pixel space of the
model wrapper's input; this equals the authors' step in normalised space divided by the
normalisation std, which is how their code applies it. The perturbed image is not clipped to
[0, 1] (as in the authors' and pytorch-ood's code).

Hyper-parameters: ``temperature`` T = 1000 and ``epsilon`` = 0.0014 (the paper's defaults).
Needs its own forward and backward pass per image (``needs_images``); with ``epsilon = 0`` it
reduces to temperature-scaled MSP and :meth:`ODIN.score` works on the shared logits.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector


class ODIN(Detector):
    """Temperature-scaled MSP on gradient-perturbed inputs.

    Args:
        temperature: Softmax temperature T > 0; default 1000.
        epsilon: Perturbation size in [0, 1] pixel units, >= 0; default 0.0014.
    """

    needs_images = True

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if temperature <= 0 or epsilon < 0:
            raise ValueError(f"ODIN needs temperature > 0 and epsilon >= 0, got {temperature}, {epsilon}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)

    def _msp(self, logits: torch.Tensor) -> torch.Tensor:
        return -torch.softmax(logits.float() / self.temperature, dim=1).amax(dim=1)

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.epsilon:
            raise NotImplementedError("ODIN with epsilon > 0 needs the images: use score_images(model, images)")
        return self._msp(logits)

    def score_images(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """ODIN scores of a batch.

        Args:
            model: Maps float images in [0, 1] (N, 3, H, W) to logits (the model wrapper), in eval mode.
            images: The batch, on the model's device.

        Returns:
            (N,) scores on the images' device. Per-image gradients (summed loss), so the scores do
            not depend on the batch size.
        """
        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)
            logits = model(x)
            if self.epsilon == 0:
                return self._msp(logits.detach())
            loss = torch.nn.functional.cross_entropy(
                logits.float() / self.temperature, logits.argmax(dim=1).detach(), reduction="sum"
            )
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            return self._msp(model(images - self.epsilon * grad.sign()))
