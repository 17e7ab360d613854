"""The generator registry: one `GeneratorMeta` record per generator, importable without torch.

    from histosynth.generators.registry import GENERATORS, generator_class, generator_meta
    generator_meta("htd").outputs  # metadata, nothing imported
    generator_class("htd")         # imports the implementation its `target` names, on first use

Each implementation class carries the same record as its `meta` (`meta = generator_meta("htd")`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from histosynth.deprecated import replaced_names
from histosynth.generators.base import Generator, GeneratorMeta
from histosynth.registry import Registry, import_target

HTD_PAPER = ("Semantic and Visual Crop-Guided Diffusion Models for Heterogeneous Tissue Synthesis in "
             "Histopathology (HeteroTissue-Diffuse, NeurIPS 2025, arXiv:2509.17847)")
HTD_CITATION = """@inproceedings{htd2025,
  title = {Semantic and Visual Crop-Guided Diffusion Models for Heterogeneous Tissue Synthesis in Histopathology},
  author = {Alfasly, Saghir and Alabtah, Ghazal and Hoq, MD Enamul and Uegami, Wataru and Tizhoosh, H. R.},
  booktitle = {NeurIPS},
  year = {2025},
  eprint = {2509.17847},
  archivePrefix = {arXiv}
}"""
HARP_CITATION = """@inproceedings{fuchs2024harp,
  title = {HARP: Unsupervised Histopathological Artifact Restoration Pipeline},
  author = {Fuchs, Moritz and Sivakumar, Ssharvien Kumar R and others and Mukhopadhyay, Anirban},
  booktitle = {Medical Imaging with Deep Learning (MIDL)},
  year = {2024}
}
@inproceedings{saharia2022palette,
  title = {Palette: Image-to-Image Diffusion Models},
  author = {Saharia, Chitwan and Chan, William and Chang, Huiwen and Lee, Chris and Ho, Jonathan and Salimans, Tim and
            Fleet, David and Norouzi, Mohammad},
  booktitle = {ACM SIGGRAPH 2022 Conference Proceedings},
  year = {2022}
}"""
DUAL_LORA_PAPER = "Structure-Guided Histopathology Synthesis via Dual-LoRA Diffusion (arXiv:2603.04565)"
DUAL_LORA_CITATION = """@article{duallora2026,
  title = {Structure-Guided Histopathology Synthesis via Dual-LoRA Diffusion},
  author = {Xu and Prasanna},
  journal = {arXiv preprint arXiv:2603.04565},
  year = {2026},
  eprint = {2603.04565},
  archivePrefix = {arXiv}
}"""
LICENSE = "Apache-2.0 (histosynth code); trained weights carry the license of their training data"

_BUILTIN = [
    GeneratorMeta(
        name="htd",
        version="0.1.0",
        summary="HTD: diffusion conditioned ControlNet-style on a tissue map + per-class visual crops (4K channels)",
        paper=HTD_PAPER, citation=HTD_CITATION, license=LICENSE,
        conditioning=("tissue", "crops"), outputs=("image", "tissue"), label_policy="copied", family="diffusion",
        target="histosynth.generators.htd.model:HTDGenerator",
    ),
    GeneratorMeta(
        name="htd-unconditional",
        version="0.1.0",
        summary="HTD ablation: the same diffusion backbone with no condition (outputs carry no labels)",
        paper=HTD_PAPER, citation=HTD_CITATION, license=LICENSE,
        conditioning=(), outputs=("image",), label_policy="none", family="diffusion",
        target="histosynth.baselines.htd_ablations.model:HTDUnconditional",
    ),
    GeneratorMeta(
        name="htd-embedding",
        version="0.1.0",
        summary="HTD ablation: each class crop replaced by an encoder embedding broadcast over its class region",
        paper=HTD_PAPER, citation=HTD_CITATION, license=LICENSE,
        conditioning=("tissue", "crops"), outputs=("image", "tissue"), label_policy="copied", family="diffusion",
        target="histosynth.baselines.htd_ablations.model:HTDEmbedding",
    ),
    GeneratorMeta(
        name="harp-inpaint",
        version="0.1.0",
        summary="HARP-like inpainting baseline: Palette's conditional DDPM (6-channel UNet, known pixels kept), on diffusers",
        paper="HARP: Unsupervised Histopathological Artifact Restoration Pipeline (Fuchs et al., MIDL 2024); "
              "Palette: Image-to-Image Diffusion Models (Saharia et al., SIGGRAPH 2022, arXiv:2111.05826)",
        citation=HARP_CITATION, license=LICENSE,
        conditioning=("mask",), outputs=("image",), label_policy="none", family="diffusion",
        target="histosynth.baselines.harp_inpaint.model:HarpInpaint", tasks=("completion",),
    ),
    GeneratorMeta(
        name="dual-lora",
        version="0.1.0",
        summary="Dual-LoRA: nuclei-centroid-guided diffusion with two LoRA adapters, global synthesis and masked "
                "completion",
        paper=DUAL_LORA_PAPER, citation=DUAL_LORA_CITATION, license=LICENSE,
        conditioning=("nuclei", "mask"), outputs=("image", "nuclei"), label_policy="copied", family="diffusion",
        tasks=("synthesis", "completion"),
        target="histosynth.generators.dual_lora.model:DualLoraGenerator",
    ),
    GeneratorMeta(
        name="real-heldout",
        version="0.1.0",
        summary="Reference: each condition's own real patch and map passed through (held-out conditions: the ceiling)",
        paper="none (a reference row)", citation="none", license=LICENSE,
        conditioning=("tissue",), outputs=("image", "tissue"), label_policy="copied", family="reference",
        target="histosynth.baselines.reference.model:RealHeldout",
    ),
    GeneratorMeta(
        name="copy-nearest",
        version="0.1.0",
        summary="Copy baseline: the training patch whose tissue map best matches the condition's (memorization check)",
        paper="none (a reference row)", citation="none", license=LICENSE,
        conditioning=("tissue",), outputs=("image", "tissue"), label_policy="copied", family="reference",
        target="histosynth.baselines.reference.model:CopyNearest",
    ),
    GeneratorMeta(
        name="cosyn",
        version="0.1.0",
        summary="CoSyn-style joint diffusion: a new patch with its own nuclei instances and classes from a centroid "
                "layout (+ tissue type)",
        paper="Co-synthesis of Histopathology Nuclei Image-Label Pairs using a Context-Conditioned Joint Diffusion "
              "Model (CoSyn, Min, Oh, Jeong, ECCV 2024, arXiv:2407.14434)",
        citation="""@inproceedings{min2024cosyn,
  title = {Co-synthesis of Histopathology Nuclei Image-Label Pairs using a Context-Conditioned Joint Diffusion Model},
  author = {Min, Seonghui and Oh, Hyun-Jic and Jeong, Won-Ki},
  booktitle = {ECCV},
  year = {2024},
  eprint = {2407.14434},
  archivePrefix = {arXiv}
}""", license=LICENSE,
        conditioning=("nuclei",), outputs=("image", "nuclei"), label_policy="generated", family="diffusion",
        target="histosynth.generators.cosyn.model:CoSynGenerator",
    ),
    GeneratorMeta(
        name="pix2pix",
        version="0.1.0",
        summary="pix2pix: conditional GAN, U-Net generator + 70x70 PatchGAN on the tissue map one-hot (GAN + 100 L1); "
                "preset *-nuclei adds centroid maps",
        paper="Image-to-Image Translation with Conditional Adversarial Networks (pix2pix, Isola, Zhu, Zhou, Efros, "
              "CVPR 2017, arXiv:1611.07004)",
        citation="""@inproceedings{isola2017pix2pix,
  title = {Image-to-Image Translation with Conditional Adversarial Networks},
  author = {Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A.},
  booktitle = {CVPR},
  year = {2017},
  eprint = {1611.07004},
  archivePrefix = {arXiv}
}""", license=LICENSE,
        conditioning=("tissue",), outputs=("image", "tissue"), label_policy="copied", family="gan",
        target="histosynth.baselines.pix2pix.model:Pix2Pix",
    ),
    GeneratorMeta(
        name="spade",
        version="0.1.0",
        summary="SPADE/GauGAN: SPADE residual generator from the downsampled tissue map (+ noise), 2-scale PatchGAN, "
                "hinge + feature matching, TTUR",
        paper="Semantic Image Synthesis with Spatially-Adaptive Normalization (SPADE/GauGAN, Park, Liu, Wang, Zhu, "
              "CVPR 2019, arXiv:1903.07291)",
        citation="""@inproceedings{park2019spade,
  title = {Semantic Image Synthesis with Spatially-Adaptive Normalization},
  author = {Park, Taesung and Liu, Ming-Yu and Wang, Ting-Chun and Zhu, Jun-Yan},
  booktitle = {CVPR},
  year = {2019},
  eprint = {1903.07291},
  archivePrefix = {arXiv}
}""", license=LICENSE,
        conditioning=("tissue",), outputs=("image", "tissue"), label_policy="copied", family="gan",
        target="histosynth.baselines.spade.model:Spade",
    ),
]

GENERATORS: Registry[GeneratorMeta] = Registry("generator")


def register_generator(meta: GeneratorMeta) -> None:
    """Register a generator by its metadata (duplicate names raise); its class is imported when first asked for."""
    GENERATORS.register(meta.name, meta, meta.summary)


def builtin_generators() -> list[str]:
    """Names of the generators histosynth itself ships (plugins excluded), sorted."""
    return [name for name in GENERATORS if generator_meta(name).target.startswith("histosynth.")]


def generator_meta(name: str) -> GeneratorMeta:
    """The metadata of registered generator `name` (unknown names suggest the closest)."""
    return GENERATORS.get(name)


def generator_class(name: str) -> type[Generator]:
    """The implementation of registered generator `name`, imported from its metadata's `target`."""
    return import_target(generator_meta(name).target)  # type: ignore[return-value]


class _MetaMapping(Mapping[str, GeneratorMeta]):
    """The registry read as the name -> GeneratorMeta dict it replaced."""

    def __getitem__(self, name: str) -> GeneratorMeta:
        if name not in GENERATORS:
            raise KeyError(name)
        return GENERATORS.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(GENERATORS)

    def __len__(self) -> int:
        return len(GENERATORS)


for _meta in _BUILTIN:
    register_generator(_meta)
del _meta

__getattr__ = replaced_names(__name__, {"GENERATOR_META": ("GENERATORS (a Registry of GeneratorMeta) or generator_meta(name)",
                                                           _MetaMapping)})
