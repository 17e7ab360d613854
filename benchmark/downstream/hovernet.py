"""HoVer-Net style nuclei models and their loss (Graham et al. 2019, "HoVer-Net", Medical Image Analysis 58).

Three presets share one output contract, `{"np": (B, 2, H', W'), "hv": (B, 2, H', W'), "nc": (B, K, H', W')}`
(logits, regression, logits):
- `paper`: `monai.networks.nets.HoVerNet` in fast mode (256 px in, 164 px out: valid convolutions in the decoders),
  random init (no ResNet-50 ImageNet weights are shipped offline).
- `tiny` / `demo`: a HoVer-UNet-style compact model for CPU, an smp Unet on the timm `tf_efficientnet_lite0`
  encoder with the offline ImageNet weights (loaded 288/288 as benchmark/segmenter.py does) and 2 + 2 + K output
  channels split into the three heads; output size = input size (a multiple of 32).
K counts the type channels including background 0: a schema with C nucleus classes (ids 1..C) needs K = C + 1.

`hover_loss` is the paper's loss: NP and NC cross-entropy + Dice, HV MSE + MSGE (mean squared error of the HV
maps' gradients inside nuclei), weighted as the paper does (λ = 2 on the MSGE, 1 elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from histosynth.errors import InputError
from histosynth.registry import Registry

MsgeMode = Literal["paper", "legacy"]
SOBEL_SIZE = 5  # the 5x5 gradient kernel of both official implementations


@dataclass(frozen=True)
class HoverPreset:
    """One nuclei-model configuration: architecture, training crop and output size, decoder widths."""

    name: str
    arch: Literal["monai-hovernet", "unet-lite0"]
    input_px: int  # the training crop side the preset is meant for
    output_px: int  # the side of its outputs for that crop (smaller than input_px when convolutions are valid)
    decoder_channels: tuple[int, ...] = ()
    summary: str = ""


HOVER_PRESETS: Registry[HoverPreset] = Registry("HoVer-Net preset")
for _preset in (
    HoverPreset("tiny", "unet-lite0", 64, 64, (64, 32, 16, 16, 8), "Unet on Lite0, narrow decoder; CPU tests"),
    HoverPreset("demo", "unet-lite0", 128, 128, (256, 128, 64, 32, 16), "Unet on Lite0, smp's default decoder"),
    HoverPreset("paper", "monai-hovernet", 256, 164, (), "MONAI HoVerNet, fast mode (256 -> 164 px)"),
):
    HOVER_PRESETS.register(_preset.name, _preset, _preset.summary)


class _SplitHeads(nn.Module):
    """A dense network with 2 + 2 + K output channels, read as NP logits, HV maps and NC logits."""

    def __init__(self, net: nn.Module, num_types: int) -> None:
        super().__init__()
        self.net = net
        self.num_types = num_types

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"np": out[:, :2], "hv": out[:, 2:4], "nc": out[:, 4:]}


class _MonaiHoVerNet(nn.Module):
    """MONAI's HoVerNet with its branch names ("nucleus_prediction", ...) renamed to np / hv / nc."""

    def __init__(self, num_types: int) -> None:
        super().__init__()
        from monai.networks.nets import HoVerNet

        self.net = HoVerNet(mode="fast", in_channels=3, np_out_channels=2, out_classes=num_types)
        self.num_types = num_types

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from monai.utils.enums import HoVerNetBranch

        out = self.net(x)
        return {"np": out[HoVerNetBranch.NP.value], "hv": out[HoVerNetBranch.HV.value],
                "nc": out[HoVerNetBranch.NC.value]}


def build_hovernet(preset: str, num_types: int, weights: str | Path | None = None,
                   pretrained: bool | None = None) -> nn.Module:
    """The nuclei model of `preset` with `num_types` type channels (background included, so >= 2).

    Inputs are (B, 3, H, W) in [-1, 1] (benchmark.segmenter.to_input). `tiny`/`demo` load the offline Lite0
    ImageNet weights (from `weights`, else the package file) unless `pretrained` is False; `paper` has no offline
    encoder weights and starts from MONAI's Kaiming init.
    """
    spec = HOVER_PRESETS.get(preset)
    if num_types < 2:
        raise InputError(f"a HoVer-Net needs >= 2 type channels (background + classes), got num_types={num_types}")
    if spec.arch == "monai-hovernet":
        if pretrained or weights is not None:
            raise InputError("the paper HoVer-Net preset has no offline encoder weights; build it with weights=None")
        return _MonaiHoVerNet(num_types)
    import segmentation_models_pytorch as smp

    from histosynth.benchmark.segmenter import load_encoder_weights

    unet = smp.Unet(encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None,
                    decoder_channels=spec.decoder_channels, classes=2 + 2 + num_types)
    if pretrained is None or pretrained:
        load_encoder_weights(unet, weights)
    return _SplitHeads(unet, num_types)


@dataclass(frozen=True)
class HoverLossWeights:
    """λ of each term. Defaults: the paper's §3.4, "λb = 2 [the MSGE] and all other scalars 1"."""

    np_ce: float = 1.0
    np_dice: float = 1.0
    hv_mse: float = 1.0
    hv_msge: float = 2.0
    nc_ce: float = 1.0
    nc_dice: float = 1.0


def gradient_kernels(size: int = SOBEL_SIZE, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The official code's "Sobel" kernels (dx / (dx² + dy²), dy / (dx² + dy²)) as (1, 1, size, size) tensors.

    Correlated with a field, kx gives d/dx (along columns) and ky d/dy (along rows), each with gain
    Σ dx² / (dx² + dy²) over the window (12 for 5x5) on a linear ramp. MONAI's SobelGradients is a different,
    unit-gain kernel: using it would shrink the MSGE 144-fold and change the paper's balance of the terms, so the
    original kernel is written out here.
    """
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(r, r, indexing="ij")  # dy varies along rows, dx along columns
    norm = dx * dx + dy * dy
    norm[size // 2, size // 2] = 1.0  # the center is 0 / 0; the official codes add 1e-15 to make it 0
    return (dx / norm).view(1, 1, size, size).to(dtype), (dy / norm).view(1, 1, size, size).to(dtype)


def hv_gradients(hv: torch.Tensor, msge: MsgeMode = "paper") -> torch.Tensor:
    """(B, 2, H, W) gradients of an [x-map, y-map] pair, zero-padded at the border.

    "paper": (d x-map / dx, d y-map / dy), the paper's eq. 3. "legacy": the official PyTorch port's
    (d x-map / dy, d y-map / dx): its torch.meshgrid defaults to "ij" indexing, which transposes the TensorFlow
    original's kernels, so each map is differentiated across its own direction.
    """
    kx, ky = (k.to(hv.device) for k in gradient_kernels(dtype=hv.dtype))
    if msge == "paper":
        k0, k1 = kx, ky
    elif msge == "legacy":
        k0, k1 = ky, kx
    else:
        raise ValueError(f"msge must be 'paper' or 'legacy', not {msge!r}")
    pad = SOBEL_SIZE // 2
    return torch.cat([F.conv2d(hv[:, :1], k0, padding=pad), F.conv2d(hv[:, 1:2], k1, padding=pad)], dim=1)


def msge_loss(pred_hv: torch.Tensor, true_hv: torch.Tensor, focus: torch.Tensor,
              msge: MsgeMode = "paper") -> torch.Tensor:
    """The paper's eq. 3: (1/m) Σ_M (∇x p_x - ∇x Γ_x)² + (1/m) Σ_M (∇y p_y - ∇y Γ_y)², M the m nuclei pixels
    of `focus` (B, H, W). Zero when there is no nucleus pixel. (The official codes divide by 2m instead.)"""
    diff = hv_gradients(pred_hv, msge) - hv_gradients(true_hv, msge)
    mask = focus.to(diff.dtype).unsqueeze(1)
    return (mask * diff * diff).sum() / mask.sum().clamp_min(1.0)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central (h, w) window of the last two axes (the paper preset's 164 px outputs cover the central
    164 px of its 256 px input: MONAI's decoders trim their shortcuts symmetrically)."""
    h, w = x.shape[-2:]
    if size[0] > h or size[1] > w:
        raise ValueError(f"cannot crop {h}x{w} to a larger {size[0]}x{size[1]}")
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def _ce_dice(logits: torch.Tensor, labels: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (mean over pixels) and the official Dice: Σ over classes of 1 - (2|P∩T| + s) / (|P| + |T| + s),
    each class pooled over the batch, s = 1e-3 (MONAI's DiceLoss configured to match)."""
    from monai.losses import DiceLoss

    k = logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"{name} targets hold ids {int(labels.min())}..{int(labels.max())}, outside 0..{k - 1}")
    dice = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, smooth_nr=1e-3, smooth_dr=1e-3,
                    batch=True, reduction="sum")
    return F.cross_entropy(logits, labels), dice(logits, labels.unsqueeze(1))


def hover_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], msge: MsgeMode = "paper",
               weights: HoverLossWeights = HoverLossWeights()) -> dict[str, torch.Tensor]:
    """Each term of the HoVer-Net loss and their weighted sum "loss".

    `outputs` as build_hovernet returns them; `targets`: "np" (B, H, W) 0/1, "hv" (B, 2, H, W) float [x-map,
    y-map], "nc" (B, H, W) type ids 0..K-1. Targets larger than the outputs are center-cropped to them.
    """
    size = tuple(outputs["np"].shape[-2:])
    np_t = center_crop(targets["np"], size).long()
    hv_t = center_crop(targets["hv"], size).to(outputs["hv"].dtype)
    nc_t = center_crop(targets["nc"], size).long()
    terms: dict[str, torch.Tensor] = {}
    terms["np_ce"], terms["np_dice"] = _ce_dice(outputs["np"], np_t, "NP")
    terms["hv_mse"] = F.mse_loss(outputs["hv"], hv_t)
    terms["hv_msge"] = msge_loss(outputs["hv"], hv_t, np_t, msge)
    terms["nc_ce"], terms["nc_dice"] = _ce_dice(outputs["nc"], nc_t, "NC")
    terms["loss"] = sum(getattr(weights, name) * value for name, value in terms.items())
    return terms


__all__ = ["HOVER_PRESETS", "HoverLossWeights", "HoverPreset", "build_hovernet", "center_crop", "gradient_kernels",
           "hover_loss", "hv_gradients", "msge_loss"]
