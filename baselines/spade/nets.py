"""The networks and losses of the SPADE/GauGAN baseline (Park et al., CVPR 2019; reference code NVlabs/SPADE).

Built from MONAI where its blocks match the reference, the rest written here:
- `SPADENorm` and `SPADEResBlock` are written here, as the reference's SPADE and SPADEResnetBlock: a parameter-free
  instance norm; ReLU(3x3 conv, 128 hidden channels) of the nearest-resized map, then 3x3 convs to gamma and beta;
  out = norm(x) * (1 + gamma) + beta; the block is SPADE-LeakyReLU(0.2)-conv twice (middle width min(in, out)),
  plus a SPADE + 1x1 conv (no bias) shortcut when the widths differ; spectral norm on the block's three convs.
  MONAI's SPADE (monai.networks.blocks.SPADE, used by its SPADENetResBlock) does not match: its gamma and beta
  convs are MONAI Convolutions with their default instance norm, so gamma and beta are re-centered over the whole
  image and a change of the map anywhere changes the modulation everywhere (tests/unit/test_gan_spade.py shows
  ours changes it only within 2 px of the change); it also uses LeakyReLU(0.01) in the shared conv.
- The generator (`SpadeGeneratorNet`) is written here: MONAI's SPADEDecoder has no middle blocks, upsamples after
  every block and ends in LeakyReLU, unlike GauGAN. It follows the reference SPADEGenerator in its "G from
  segmentation map" mode (no VAE encoder): the map resized to the start grid (R / 2^n) -> 3x3 conv to
  2^(n-1) ngf channels -> head block, x2, two middle blocks, then n - 1 x (x2, block halving the width) ->
  LeakyReLU(0.2) -> 3x3 conv to RGB -> tanh. With n = 5 upsamplings that is the reference's "normal" generator
  (16 ngf at the start, up_0..up_3 to ngf); fewer upsamplings give the small presets the same shape.
- The discriminator (`SpadeDiscriminatorNet`) is MONAI's PatchDiscriminator, one per scale, in a multiscale wrapper
  written here: MONAI's MultiScalePatchDiscriminator deepens each further scale instead of feeding it a downsampled
  input, so the reference's (avg-pool 3, stride 2, count_include_pad=False between scales) is ours. Each scale is
  the reference NLayerDiscriminator with n_layers_D = 4 (MONAI num_layers_d = 3 plus its first conv): 4x4 convs,
  padding 2, ndf doubling, stride 2 except the last hidden layer, instance norm + spectral norm (ours) on the
  hidden layers (reference norm_D "spectralinstance"), LeakyReLU(0.2), a 4x4 conv to one logit per patch; its input
  is the one-hot map concatenated with the image. Every layer output but the last feeds feature matching.
- Losses (`hinge_d`, `hinge_g`, `feature_matching`) are the reference GANLoss("hinge") and GAN_Feat loss, written
  here: MONAI's PatchAdversarialLoss passes logits through tanh and gives the generator the real-side hinge,
  where the reference uses the raw logits and -mean(D(fake)).
- `VGGPerceptual` is the reference VGGLoss (VGG19 relu1_1..relu5_1, weights 1/32 .. 1, L1); it needs ImageNet
  VGG19 weights, which cannot be had offline, so it loads them only from a file the user names.

Differences from the reference (also on the model card):
- Base norm in the generator: instance norm (the reference's "spectralspadeinstance3x3" option) instead of the
  default synchronized batch norm: the paper preset trains with batch 1, and a sample must not depend on its batch.
- The discriminator's last conv pads 1 (MONAI) instead of 2, so its patch grid is one smaller.
- Conditioning: ignore pixels (255) are all-zero in the one-hot map (no extra "don't care" channel, no instance
  edges). Diversity: a z_dim noise vector per sample, broadcast over the start grid and concatenated to the
  downsampled map (the reference's map-only generator is deterministic; its VAE mode samples z the same way).
- Weight init: xavier normal with gain 0.02, zero biases, as the reference's init_type / init_variance defaults.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from monai.networks.layers import Act
from monai.networks.nets.patchgan_discriminator import PatchDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from histosynth.errors import InputError

LEAK = 0.2
INIT_GAIN = 0.02  # reference init_variance (xavier)
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19 weights
VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # features up to relu1_1 .. relu5_1
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def init_weights(module: nn.Module) -> None:
    """Xavier-normal (gain 0.02) conv and linear weights, zero biases: the reference BaseNetwork.init_weights."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=INIT_GAIN)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _spectral(conv: nn.Module) -> None:
    """Spectral norm on the nn.Conv2d inside a MONAI Convolution (in place)."""
    conv.conv = spectral_norm(conv.conv)


class SPADENorm(nn.Module):
    """Spatially-adaptive normalization: instance-normalized x, scaled and shifted per pixel by convs of the map."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        h = self.shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """SPADE residual block: two SPADE-LeakyReLU-conv3x3 stages, learned SPADE + 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        middle = min(in_channels, out_channels)
        self.norm_0 = SPADENorm(in_channels, label_channels, hidden)
        self.conv_0 = nn.Conv2d(in_channels, middle, 3, padding=1)
        self.norm_1 = SPADENorm(middle, label_channels, hidden)
        self.conv_1 = nn.Conv2d(middle, out_channels, 3, padding=1)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADENorm(in_channels, label_channels, hidden)
            self.conv_s = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def add_spectral_norm(self) -> None:
        """Spectral norm on the three convs (after their init: it wraps the weight it finds)."""
        for name in ("conv_0", "conv_1", "conv_s"):
            if hasattr(self, name):
                setattr(self, name, spectral_norm(getattr(self, name)))

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), LEAK))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), LEAK))
        return shortcut + dx


class SpadeGeneratorNet(ModelMixin, ConfigMixin):
    """GauGAN's generator from a downsampled map (+ noise); see the module docstring."""

    @register_to_config
    def __init__(self, label_channels: int, resolution: int = 256, ngf: int = 64, upsamplings: int = 5,
                 spade_hidden: int = 128, z_dim: int = 256, spectral: bool = True) -> None:
        super().__init__()
        if upsamplings < 2 or resolution % 2**upsamplings:
            raise InputError(f"spade: resolution {resolution} must be divisible by 2^{upsamplings} upsamplings (>= 2)")
        self.start = resolution // 2**upsamplings
        top = ngf * 2 ** (upsamplings - 1)
        widths = [top // 2**i for i in range(upsamplings)]  # the up blocks halve from `top` to ngf

        def block(cin: int, cout: int) -> SPADEResBlock:
            return SPADEResBlock(cin, cout, label_channels, spade_hidden)

        self.fc = nn.Conv2d(label_channels + z_dim, top, 3, padding=1)
        self.head_0 = block(top, top)
        self.middle_0 = block(top, top)
        self.middle_1 = block(top, top)
        self.ups = nn.ModuleList(block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.conv_img = nn.Conv2d(ngf, 3, 3, padding=1)
        init_weights(self)  # before spectral norm wraps the weights
        if spectral:  # on the residual blocks' convs, as the reference; not on SPADE's convs, fc or conv_img
            for b in [self.head_0, self.middle_0, self.middle_1, *self.ups]:
                b.add_spectral_norm()

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, R, R) one-hot map [+ (B, z_dim) noise] -> (B, 3, R, R) image in [-1, 1]."""
        x = F.interpolate(seg, size=(self.start, self.start), mode="nearest")
        if self.config.z_dim:
            if z is None or z.shape != (seg.shape[0], self.config.z_dim):
                raise ValueError(f"spade generator needs noise of shape ({seg.shape[0]}, {self.config.z_dim})")
            x = torch.cat([x, z[:, :, None, None].expand(-1, -1, self.start, self.start)], dim=1)
        x = self.fc(x)
        x = self.head_0(x, seg)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.middle_1(self.middle_0(x, seg), seg)
        for block in self.ups:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, LEAK)))


class SpadeDiscriminatorNet(ModelMixin, ConfigMixin):
    """Multiscale PatchGAN on concat(one-hot map, image); see the module docstring."""

    @register_to_config
    def __init__(self, in_channels: int, ndf: int = 64, num_d: int = 2, layers: int = 4, spectral: bool = True) -> None:
        super().__init__()
        self.scales = nn.ModuleList()
        for _ in range(num_d):
            d = PatchDiscriminator(spatial_dims=2, channels=ndf, in_channels=in_channels, out_channels=1,
                                   num_layers_d=layers - 1, kernel_size=4, norm="INSTANCE", bias=False, padding=2,
                                   activation=(Act.LEAKYRELU, {"negative_slope": LEAK}), last_conv_kernel_size=4)
            init_weights(d)
            if spectral:
                for i in range(layers - 1):
                    _spectral(getattr(d, str(i)))
            self.scales.append(d)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale: its hidden layer outputs, then its patch logits (last)."""
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def hinge_d(outputs: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """Discriminator hinge loss, mean over scales: E[relu(1 - D)] on real pairs, E[relu(1 + D)] on fake ones."""
    sign = -1.0 if real else 1.0
    return torch.stack([F.relu(1 + sign * scale[-1]).mean() for scale in outputs]).mean()


def hinge_g(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Generator hinge loss, mean over scales: -E[D(fake)]."""
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], weight: float = 10.0) -> torch.Tensor:
    """Sum over scales and hidden layers of L1(D_feat(fake), D_feat(real)) x `weight` / number of scales."""
    total = fake[0][0].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        for fr, ff in zip(r[:-1], f[:-1], strict=True):
            total = total + F.l1_loss(ff, fr.detach())
    return total * weight / len(fake)


class VGGPerceptual(nn.Module):
    """The reference VGG loss on ImageNet VGG19 features loaded from a local torchvision weights file (frozen)."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        import torchvision

        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / VGG19_FILE
        if not path.is_file():
            raise InputError(f"{path}: VGG19 weights file not found; the VGG perceptual loss needs torchvision's "
                             f"ImageNet {VGG19_FILE} (https://download.pytorch.org/models/{VGG19_FILE})")
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # VGG19's conv part only
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        except Exception as err:  # pickle, zip and key-mismatch errors each have their own type
            raise InputError(f"{path}: not torchvision VGG19 weights ({type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0][:200]})") from err
        self.slices = nn.ModuleList(features[a:b] for a, b in VGG_SLICES)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "VGGPerceptual":
        return super().train(False)  # always frozen

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Weighted L1 between the relu_1 features of each block (images in [-1, 1], as the reference feeds them)."""
        loss, x, y = fake.new_zeros(()), fake, real
        for weight, part in zip(VGG_WEIGHTS, self.slices, strict=True):
            x, y = part(x), part(y)
            loss = loss + weight * F.l1_loss(x, y.detach())
        return loss
