"""uint8 RGB batches -> encoder inputs, once per distinct `PreprocessSpec`.

As timm's eval transform: resize to floor(size / crop_pct), then take the center size x size (torchvision's
CenterCrop offsets); crop_pct 1 is a plain resize. Resizing happens on float pixel values in [0, 255] and is then
rounded and clipped to the uint8 grid, as a PIL resize of a uint8 image would be (bicubic overshoot never leaves
[0, 255]). The filter is torch's, not PIL's: PIL rounds and clips to uint8 between its horizontal and vertical
passes, so the two can differ, most on pixel noise. Images that already have the resize side are not resized at
all. Non-square images are squashed to a square (patches here are square), where timm would keep the aspect ratio.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from histosynth.benchmark.encoders.meta import PreprocessSpec

Layout = Literal["auto", "nhwc", "nchw"]


def as_nchw_uint8(images: np.ndarray | torch.Tensor, layout: Layout = "auto") -> torch.Tensor:
    """A uint8 RGB batch (N,H,W,3) or (N,3,H,W), or one image, as a uint8 NCHW tensor (no copy when possible)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 RGB images (numpy or torch), got {getattr(x, 'dtype', type(x))}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected (N,H,W,3) or (N,3,H,W) images, got shape {tuple(x.shape)}")
    if layout == "auto":
        channels_last, channels_first = x.shape[-1] == 3, x.shape[1] == 3
        if channels_last == channels_first:
            raise ValueError(f"cannot tell the channel axis of shape {tuple(x.shape)}: pass layout='nhwc' or 'nchw'")
        layout = "nhwc" if channels_last else "nchw"
    if layout == "nhwc":
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 RGB channels, got shape {tuple(x.shape)} as {layout}")
    return x


def resize_uint8_grid(x: torch.Tensor, size: int, mode: str, antialias: bool) -> torch.Tensor:
    """Resize float NCHW pixel values in [0, 255] to size x size, rounded and clipped to the uint8 grid."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x, size=(size, size), mode=mode, antialias=antialias, align_corners=False)
    return out.round_().clamp_(0, 255)


def preprocess(
    images: np.ndarray | torch.Tensor,
    spec: PreprocessSpec,
    device: str | torch.device | None = None,
    layout: Layout = "auto",
) -> torch.Tensor:
    """Encoder input for `spec`: uint8 NCHW unchanged (kind "uint8"), else resized, scaled and normalized float32."""
    x = as_nchw_uint8(images, layout)
    if device is not None:
        x = x.to(device)
    if spec.kind == "uint8":
        return x.contiguous()
    if spec.size is None or spec.resize is None or spec.mean is None or spec.std is None:
        raise ValueError(f"float preprocessing needs size, resize, mean and std: {spec}")
    y = resize_uint8_grid(x.float(), spec.resize_to, spec.resize, spec.antialias)
    top = int(round((spec.resize_to - spec.size) / 2.0))
    y = y[..., top : top + spec.size, top : top + spec.size]
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=y.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, dtype=torch.float32, device=y.device).view(1, 3, 1, 1) * 255.0
    return ((y - mean) / std).contiguous()
