"""The README.md model card of a saved generator folder: Hub YAML metadata plus what it is and how it was made."""

from __future__ import annotations

from typing import Any

import yaml

from histosynth.generators.base import GeneratorMeta


def render_model_card(meta: GeneratorMeta, config: dict[str, Any]) -> str:
    """Model card text for a generator folder whose config.json content is `config`."""
    training = config.get("training") or {}
    model = config.get("model") or {}
    licence = training.get("data_licence") or "other"
    front = {
        "library_name": "histosynth",
        "license": licence,
        "tags": ["histopathology", "diffusion", "histosynth", meta.name, "synthetic-data"],
        "pipeline_tag": "image-to-image" if meta.conditioning else "unconditional-image-generation",
    }
    if training.get("source_datasets"):
        front["datasets"] = list(training["source_datasets"])
    space = "pixel space" if model.get("autoencoder") is None else f"the latent space of a frozen {model['autoencoder']['kind'].upper()} autoencoder"
    lines = [
        "---", yaml.safe_dump(front, sort_keys=True).strip(), "---", "",
        f"# {meta.name} {meta.version} ({config.get('preset', 'custom')} preset)", "",
        meta.summary + ".", "",
        "## Model", "",
        f"- Paper: {meta.paper}",
        f"- Diffusion in {space} at {model.get('resolution')} px; UNet widths {model.get('block_out_channels')}, "
        f"{model.get('layers_per_block')} layers per block; {model.get('num_train_timesteps')} timesteps "
        f"({model.get('beta_schedule')} betas {model.get('beta_start')} -> {model.get('beta_end')}).",
        f"- Condition: {', '.join(meta.conditioning) or 'none'}; outputs: {', '.join(meta.outputs)}; "
        f"tissue classes K = {model.get('num_classes')} (schema {model.get('tissue_schema')}).",
        f"- Components: {', '.join(config.get('components', []))}; weights hash `{config.get('checkpoint_hash')}` "
        "(sha256 over the safetensors files, recorded in every generated sample's provenance).", "",
        "## Training", "",
    ]
    if training:
        lines += [
            f"- Data: {training.get('data')}, {training.get('patches')} patches "
            f"({training.get('dropped_homogeneous', 0)} homogeneous patches left out), licence {licence}.",
            f"- {training.get('steps')} optimizer steps; final loss {training.get('final_loss')}; "
            f"{training.get('train_images_per_second')} images/s.",
        ]
    else:
        lines.append("- Not trained (random weights).")
    lines += [
        "", "## Use", "",
        "```",
        f"histosynth generate {meta.name} --checkpoint THIS_FOLDER --conditions CONDITIONS_DATASET --n 100 --out OUT",
        "```", "",
        "## Licence", "",
        f"{meta.licence}. These weights were trained on data licensed {licence}; use them under its terms.", "",
        "## Limitations", "",
        "Research use only, not for diagnosis. Generated images can contain artefacts and follow their condition "
        "imperfectly; where they do not, the label (the conditioning map) is wrong for that image.", "",
        "## Citation", "", "```bibtex", meta.citation, "```", "",
    ]
    return "\n".join(lines)
