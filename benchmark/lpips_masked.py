"""LPIPS restricted to a region (e.g. an inpainting/completion mask), in three named modes.

All modes use the `lpips` package's network (its shipped linear weights, torchvision AlexNet/VGG backbone) and
its own pieces (`scaling_layer`, `net`, `normalize_tensor`, `lins`), so with a full mask they reduce to it:

- "spatial-mean": the mean of LPIPS' spatial map (`LPIPS(spatial=True)`: every layer's distance map upsampled
  bilinearly to the image) over the masked pixels. With a full mask this equals plain LPIPS exactly only when every
  layer's resolution divides the image size (VGG at 64 px: yes; AlexNet at 64 px: no, its 15x15 conv1 map is
  upsampled by a non-integer factor), otherwise to within the bilinear resampling error.
- "layer-masked": per layer, the average of the distance map weighted by the mask resized to that layer's
  resolution, summed over layers (as public "MaskedLPIPS" code). The mask is resized by area averaging (each
  layer cell weighted by the fraction of its footprint that is masked) rather than nearest, so a small mask never
  vanishes at a coarse layer; with a full mask this equals plain LPIPS exactly.
- "bbox-crop": plain LPIPS of both images cropped to the mask's bounding box (grown, centered and clipped to the
  image, to the backbone's minimum input size). Pixels outside the (grown) box never matter.

Receptive fields: in "spatial-mean" and "layer-masked", a masked position's deep features see pixels outside the
mask (AlexNet conv5 sees ~195 px), so differences outside the mask leak in, attenuated; only "bbox-crop"
excludes them exactly.

Images are uint8 RGB (N,H,W,3) or (N,3,H,W), scaled to [-1, 1]; masks are bool (N,H,W). Values are per sample.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.hub
import torch.nn.functional as F
from torch import nn

from histosynth.benchmark.encoders.inputs import as_nchw_uint8
from histosynth.benchmark.errors import MetricInputError
from histosynth.errors import UserFacingError

Mode = Literal["spatial-mean", "layer-masked", "bbox-crop"]
MODES: tuple[str, ...] = ("spatial-mean", "layer-masked", "bbox-crop")
# torchvision's ImageNet files that lpips' backbones load (lpips calls tv.alexnet / tv.vgg16(pretrained=True)).
BACKBONE_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
# Smallest square input each backbone accepts (AlexNet: 11x11/4 conv then two 3x3/2 max pools; VGG: four 2x2 pools).
MIN_SIZE: dict[str, int] = {"alex": 31, "vgg": 16}


class LPIPSWeightsError(UserFacingError, RuntimeError):
    """The LPIPS backbone's ImageNet weights are missing; the message names the file and how to get it."""


def backbone_record(path: Path | None) -> dict[str, str]:
    """How a results file names the LPIPS backbone: its file name and weights fingerprint (never its local path)."""
    from histosynth.benchmark.encoders.weights import weights_fingerprint

    return {"backbone": Path(path).name if path else "random-init", "weights": weights_fingerprint(path)}


def backbone_file(net: str, backbone: str | Path | None = None) -> Path:
    """The torchvision weight file for `net`: `backbone` if given, else the torch hub cache; never downloads."""
    name, url = BACKBONE_FILES[net]
    if backbone is not None:
        path = Path(backbone).expanduser()
        if path.is_dir():
            path = path / name
        if path.is_file():
            return path
        raise LPIPSWeightsError(f"LPIPS {net} backbone weights not found at {path}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    raise LPIPSWeightsError(
        f"LPIPS {net} backbone weights {name} (torchvision's ImageNet weights) are not in the torch hub cache "
        f"({cached}). Download {url} into that folder (or run torchvision.models."
        f"{'alexnet' if net == 'alex' else 'vgg16'}(weights='IMAGENET1K_V1') once online), or pass "
        f"backbone=/path/to/{name}. For tests, pnet_rand=True uses a random backbone."
    )


class MaskedLPIPS(nn.Module):
    """LPIPS between image pairs inside masks; `forward` returns one value per pair (float32, shape (N,))."""

    def __init__(
        self,
        net: Literal["alex", "vgg"] = "alex",
        backbone: str | Path | None = None,
        pnet_rand: bool = False,
        layer_mask: Literal["area", "nearest"] = "area",
    ) -> None:
        """`backbone`: a local torchvision weight file/folder (else the torch hub cache); `pnet_rand=True`: random
        backbone (tests). The linear calibration weights always come from the lpips package."""
        super().__init__()
        import lpips

        if net not in BACKBONE_FILES:
            raise ValueError(f"net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
        if layer_mask not in ("area", "nearest"):
            raise ValueError(f"layer_mask must be 'area' or 'nearest', got {layer_mask!r}")
        path = None if pnet_rand else backbone_file(net, backbone)  # fail before building anything
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore")
            self.lpips = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        if path is not None:
            self._load_backbone(path)
        self.net_name = net
        self.layer_mask = layer_mask
        self.backbone_file = path
        self.eval().requires_grad_(False)

    def _load_backbone(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise LPIPSWeightsError(f"could not read LPIPS backbone file {path} ({type(error).__name__})") from None
        own = self.lpips.net.state_dict()  # names "slice{k}.{i}.weight" hold torchvision's "features.{i}.weight"
        try:
            mapped = {name: state["features." + name.split(".", 1)[1]] for name in own}
        except (KeyError, TypeError) as missing:
            raise LPIPSWeightsError(
                f"{path} is not a torchvision {self.lpips.pnet_type} state dict: no {missing}"
            ) from None
        self.lpips.net.load_state_dict(mapped, strict=True)

    def train(self, mode: bool = True) -> MaskedLPIPS:
        """Always eval: lpips' linear layers carry dropout."""
        return super().train(False)

    def layer_maps(self, x0: torch.Tensor, x1: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer LPIPS distance maps (N,1,h_l,w_l) for images in [-1, 1], exactly as lpips' forward builds them."""
        import lpips

        model = self.lpips
        f0, f1 = model.net.forward(model.scaling_layer(x0)), model.net.forward(model.scaling_layer(x1))
        return [
            model.lins[k]((lpips.normalize_tensor(f0[k]) - lpips.normalize_tensor(f1[k])) ** 2) for k in range(model.L)
        ]

    def _masked(self, x0: torch.Tensor, x1: torch.Tensor, masks: torch.Tensor, mode: str) -> torch.Tensor:
        maps = self.layer_maps(x0, x1)
        m = masks[:, None].float()
        if mode == "spatial-mean":
            spatial = sum(F.interpolate(d, size=x0.shape[2:], mode="bilinear", align_corners=False) for d in maps)
            return (spatial * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))
        total = torch.zeros(x0.shape[0], device=x0.device)
        for d in maps:
            weights = F.interpolate(m, size=d.shape[2:], mode=self.layer_mask)
            area = weights.sum(dim=(1, 2, 3))
            if bool((area == 0).any()):
                raise ValueError(f"mask vanishes at a {tuple(d.shape[2:])} layer with layer_mask='nearest'; use 'area'")
            total = total + (d * weights).sum(dim=(1, 2, 3)) / area
        return total

    def _bbox_crop(self, x0: torch.Tensor, x1: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        height, width = masks.shape[1:]
        need = MIN_SIZE[self.net_name]
        if height < need or width < need:
            raise MetricInputError(f"bbox-crop with {self.net_name} needs images of at least {need}x{need} px")
        boxes = []
        for mask in masks:
            rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
            r0, r1 = grow_span(int(rows[0]), int(rows[-1]) + 1, need, height)
            c0, c1 = grow_span(int(cols[0]), int(cols[-1]) + 1, need, width)
            boxes.append((r0, r1, c0, c1))
        out = torch.empty(x0.shape[0], device=x0.device)
        for box in set(boxes):  # one batch per distinct crop box
            index = [i for i, b in enumerate(boxes) if b == box]
            r0, r1, c0, c1 = box
            maps = self.layer_maps(x0[index, :, r0:r1, c0:c1], x1[index, :, r0:r1, c0:c1])
            out[index] = sum(d.mean(dim=(1, 2, 3)) for d in maps)
        return out

    @torch.inference_mode()
    def forward(
        self,
        images0: np.ndarray | torch.Tensor,
        images1: np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        mode: Mode = "layer-masked",
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Masked LPIPS per pair, (N,) float32 on CPU; `batch_size` only bounds memory, never changes values."""
        if mode not in MODES:
            raise ValueError(f"unknown masked-LPIPS mode {mode!r}; choose one of {MODES}")
        a, b = as_nchw_uint8(images0), as_nchw_uint8(images1)
        m = torch.from_numpy(np.asarray(masks)) if isinstance(masks, np.ndarray) else torch.as_tensor(masks)
        if m.ndim == 2:
            m = m[None]
        if a.shape != b.shape or m.shape != (a.shape[0], *a.shape[2:]):
            raise ValueError(f"shapes differ: images {tuple(a.shape)} / {tuple(b.shape)}, masks {tuple(m.shape)}")
        m = m.bool()
        empty = torch.nonzero(~m.flatten(1).any(dim=1)).flatten().tolist()
        if empty:
            raise MetricInputError(f"empty mask for sample(s) {empty[:10]}: masked LPIPS is undefined there")
        device = next(self.parameters()).device
        out = []
        for start in range(0, a.shape[0], batch_size):
            x0 = a[start : start + batch_size].to(device).float() / 127.5 - 1.0
            x1 = b[start : start + batch_size].to(device).float() / 127.5 - 1.0
            mm = m[start : start + batch_size].to(device)
            value = self._bbox_crop(x0, x1, mm) if mode == "bbox-crop" else self._masked(x0, x1, mm, mode)
            out.append(value.float().cpu())
        return torch.cat(out)


def grow_span(start: int, stop: int, need: int, limit: int) -> tuple[int, int]:
    """[start, stop) grown symmetrically to at least `need` long, shifted to stay inside [0, limit)."""
    if stop - start >= need:
        return start, stop
    start = max(0, start - (need - (stop - start)) // 2)
    stop = start + need
    if stop > limit:
        start, stop = limit - need, limit
    return start, stop


def masked_lpips(
    images0: np.ndarray | torch.Tensor,
    images1: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    mode: Mode = "layer-masked",
    net: Literal["alex", "vgg"] = "alex",
    backbone: str | Path | None = None,
    pnet_rand: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """One-call masked LPIPS: per-pair values (N,) as float32 numpy. Build `MaskedLPIPS` once for repeated use."""
    metric = MaskedLPIPS(net=net, backbone=backbone, pnet_rand=pnet_rand).to(device)
    return metric(images0, images1, masks, mode=mode, batch_size=batch_size).numpy()
