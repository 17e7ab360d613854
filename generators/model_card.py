"""The README.md model card of a saved generator folder: Hub YAML metadata plus what it is and how it was made."""

from __future__ import annotations

from typing import Any

import yaml

from histosynth.generators.base import Generator


def render_model_card(generator: Generator, config: dict[str, Any]) -> str:
    """Model card text for a generator folder whose config.json content is `config` (the contract only: metadata,
    `card_details()` and `train_report`)."""
    meta = generator.meta
    report = generator.train_report
    data = report.data if report is not None else None
    license = data.license if data is not None else "other"
    front = {
        "library_name": "histosynth",
        "license": license,
        "tags": list(dict.fromkeys(["histopathology", meta.family, "histosynth", meta.name, "synthetic-data"])),
        "pipeline_tag": "image-to-image" if meta.conditioning else "unconditional-image-generation",
    }
    if data is not None and data.source_datasets:
        front["datasets"] = list(data.source_datasets)
    labels = {"copied": "copied from the condition", "generated": "generated with the image", "none": "none"}
    lines = [
        "---", yaml.safe_dump(front, sort_keys=True).strip(), "---", "",
        f"# {meta.name} {meta.version} ({config.get('preset', 'custom')} preset)", "",
        meta.summary + ".", "",
        "## Model", "",
        f"- Paper: {meta.paper}",
        f"- Family: {meta.family}. Reads from a condition: {', '.join(meta.conditioning) or 'nothing'}; outputs: "
        f"{', '.join(meta.outputs)}; labels: {labels[meta.label_policy]}.",
        *generator.card_details(),
        f"- Components: {', '.join(config.get('components', []))}; weights hash `{config.get('checkpoint_hash')}` "
        "(sha256 over the safetensors files, recorded in every generated sample's provenance).", "",
        "## Training", "",
    ]
    if report is not None and data is not None:
        lines += [
            f"- Data: {data.description}, {data.patches} patches ({data.dropped} left out by the selection rule), "
            f"license {license}.",
            f"- {report.steps} optimizer steps; final loss {report.final_loss:.6g}; {report.images_per_second:.2f} images/s.",
        ]
        speed = report.extra.get("speed")
        if speed:
            lines.append(f"- Trained in {speed.get('precision')} with {speed.get('threads')} threads on "
                         f"{speed.get('device')} (histosynth.speed decides the precision per machine)"
                         f"{'; compiled' if speed.get('compiled') else ''}"
                         f"{_fp32_attention(speed.get('fp32_attention_shapes'))}.")
    else:
        lines.append("- Not trained (random weights).")
    lines += [
        "", "## Use", "",
        "```",
        f"histosynth generate {meta.name} --checkpoint THIS_FOLDER --conditions CONDITIONS_DATASET --n 100"
        f"{'' if 'synthesis' in meta.tasks else ' --task complete'} --out OUT",
        "```", "",
        "## License", "",
        f"{meta.license}. These weights were trained on data licensed {license}; use them under its terms.", "",
        "## Limitations", "",
        "Research use only, not for diagnosis. Generated images can contain artifacts and follow their condition "
        "imperfectly; where they do not, a label copied from the condition is wrong for that image.", "",
        "## Citation", "", "```bibtex", meta.citation, "```", "",
    ]
    return "\n".join(lines)


def _fp32_attention(shapes: object) -> str:
    """The model card's note on attention computed in float32 under bf16 autocast (the shapes, "BxHxLxE")."""
    if not shapes:
        return ""
    return f"; attention in float32 for q shapes {', '.join(map(str, shapes))} (faster than bf16 on this machine)"
