"""The nuclei kind of the downstream task: HoVer-Net trained on instance maps, scored by PQ, mPQ+ and detection F1.

Batches are random crops rotated by k x 90 degrees and flipped like the tissue task's; the HoVer-Net targets are
computed on each augmented crop (as the official loader does: augment the instance map, then derive NP/HV/NC),
so nuclei cut by the crop border get their own centre of mass. Predictions run on whole test images: the Unet
presets on the image padded to a multiple of 32, the paper preset (256 px in, 164 px out) tile by tile with the
image reflect-padded by the 46 px margin. Post-processing is hover_post.hover_postprocess at the test set's mpp.

Scores per seed (benchmark/downstream/nuclei_metrics.py): `pq`, `dq`, `sq` as the mean over images (HoVer-Net,
PanNuke); `mpq_plus` (CoNIC: per-class counts summed over patches, then the mean of class PQs); `f1_detection`
and `f1/<class>` (HoVer-Net: Hungarian pairing of centroids within 12 px at 40x, scaled to the mpp; weights
[2, 2, 1, 1]).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from histosynth.benchmark.downstream.task import (
    ONE_PROCESS,
    Group,
    Kind,
    LabelledSet,
    TrainConfig,
    augment,
    crop_plan,
    to_input,
)
from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.schema import Nuclei

UNET_MULTIPLE = 32  # the Unet presets' total stride


class _Nuclei(Kind):
    label, model, headline = "nuclei", "hovernet", "pq"
    averaging = ("pq/dq/sq: mean over images of the per-image value (IoU > 0.5 pairs; an image with no nuclei on "
                 "either side scores 1); mpq_plus: CoNIC, per-class TP/FP/FN/IoU summed over patches, mean of class "
                 "PQs; f1_detection, f1/<class>: HoVer-Net, Hungarian centroid pairing within 12 px at 40x scaled by "
                 "mpp, weights [2, 2, 1, 1], counts pooled over images (benchmark/downstream/nuclei_metrics.py)")

    def config(self, preset: str, **overrides) -> TrainConfig:
        from histosynth.benchmark.downstream.hovernet import HOVER_PRESETS
        from histosynth.benchmark.downstream.tissue import get_seg_preset

        spec, seg = HOVER_PRESETS.get(preset), get_seg_preset(preset)
        # The training budget of the same-named tissue preset; the paper's HoVer-Net trains with Adam at 1e-4.
        base = {"steps": seg.steps, "batch_size": seg.batch_size, "crop": spec.input_px,
                "lr": 1e-4 if spec.arch == "monai-hovernet" else seg.lr, "checkpoint_every": max(1, min(500, seg.steps // 10))}
        return TrainConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))

    def build(self, preset: str, num_classes: int, weights: str | None, pretrained: bool) -> nn.Module:
        from histosynth.benchmark.downstream.hovernet import build_hovernet

        return build_hovernet(preset, num_classes, weights=weights, pretrained=pretrained)

    def encoder(self, model: nn.Module) -> nn.Module | None:
        net = getattr(model, "net", None)
        return getattr(net, "encoder", None)  # the Unet presets' Lite0; MONAI's HoVerNet has no offline weights

    def check(self, data: LabelledSet, num_classes: int, config: TrainConfig) -> None:
        h, w = data.maps.shape[1:]
        if config.crop > min(h, w):
            raise InputError(f"{data.ref.path}: --crop {config.crop} is larger than its {h}x{w} patches")
        if config.crop % UNET_MULTIPLE:
            raise InputError(f"--crop must be a multiple of {UNET_MULTIPLE} for the nuclei models, got {config.crop}")
        if not any(len(t) for t in data.types or []):
            raise InputError(f"{data.ref.path}: no nuclei to train on")
        top = max(int(t.max()) for t in data.types if len(t))
        if top >= num_classes:
            raise InputError(f"{data.ref.path}: nucleus class id {top}, the schema has {num_classes} classes")

    def batch(self, rng: np.random.Generator, data: LabelledSet, config: TrainConfig, group: Group = ONE_PROCESS
              ) -> tuple[np.ndarray, dict]:
        from histosynth.benchmark.downstream.hover_targets import hover_targets

        plan, k, flip = crop_plan(rng, data, config.batch_size, config.crop, group)
        images, np_t, hv_t, nc_t = [], [], [], []
        c = config.crop
        for i, t, l in plan:
            images.append(augment(data.images[i, t : t + c, l : l + c], k, flip))
            crop = augment(data.maps[i, t : t + c, l : l + c], k, flip)
            class_of = np.concatenate([[0], data.types[i]]).astype(np.int64)
            nuclei = Nuclei.from_instance_map(data.schema, crop.astype(np.int64), class_of)  # ids 1..n again
            targets = hover_targets(nuclei.instances, nuclei.class_ids)
            np_t.append(targets.np)
            hv_t.append(targets.hv)
            nc_t.append(targets.nc)
        stacked = {"np": np.stack(np_t), "hv": np.stack(hv_t), "nc": np.stack(nc_t)}
        return np.stack(images), stacked

    def loss(self, model: nn.Module, x: torch.Tensor, targets: dict, device: str) -> torch.Tensor:
        from histosynth.benchmark.downstream.hovernet import hover_loss

        return hover_loss(model(x), {k: torch.from_numpy(v).to(device) for k, v in targets.items()})["loss"]

    def scores(self, model: nn.Module, test: LabelledSet, preset: str, device: str) -> dict[str, float]:
        from histosynth.benchmark.downstream.nuclei_metrics import detection_f1, mean_pq, mpq_plus, pairing_radius_px

        schema = get_schema(test.schema)
        preds = predict_nuclei(model, test.images, preset, test.mpp, device)
        truth = [Nuclei.from_instance_map(test.schema, inst.astype(np.int64), np.concatenate([[0], t]).astype(np.int64))
                 for inst, t in zip(test.maps, test.types, strict=True)]
        pq = mean_pq([(t.instances, p.instances) for t, p in zip(truth, preds, strict=True)])
        mpq = mpq_plus([(t.instances, t.class_ids, p.instances, p.types) for t, p in zip(truth, preds, strict=True)],
                       schema.num_classes)
        f1 = detection_f1([t.centroids for t in truth], [t.class_ids for t in truth], [p.centroids for p in preds],
                          [p.types for p in preds], pairing_radius_px(test.mpp), schema.num_classes)
        out = {"pq": pq.pq, "dq": pq.dq, "sq": pq.sq, "mpq_plus": mpq.mpq_plus, "f1_detection": f1.f1}
        for c, value in f1.per_class_f1.items():
            if not math.isnan(value):
                out[f"f1/{schema.names[c]}"] = value
        return out


NUCLEI = _Nuclei()


def predict_nuclei(model: nn.Module, images: np.ndarray, preset: str, mpp: float, device: str = "cpu") -> list:
    """HoVer-Net post-processed predictions (hover_post.NucleiPrediction) of (N, H, W, 3) uint8 images."""
    from histosynth.benchmark.downstream.hover_post import hover_postprocess
    from histosynth.benchmark.downstream.hovernet import HOVER_PRESETS

    spec = HOVER_PRESETS.get(preset)
    out = []
    model.eval()
    with torch.inference_mode():
        for image in images:
            maps = _dense_outputs(model, image, spec.input_px, spec.output_px, device)
            np_prob = torch.softmax(maps["np"], 0)[1].numpy()
            nc_prob = torch.softmax(maps["nc"], 0).numpy()
            out.append(hover_postprocess(np_prob, maps["hv"].numpy(), nc_prob, mpp))
    return out


def _dense_outputs(model: nn.Module, image: np.ndarray, window_in: int, window_out: int, device: str) -> dict:
    """The model's np/hv/nc outputs (C, H, W) over a whole (H, W, 3) image."""
    h, w = image.shape[:2]
    if window_in == window_out:  # same-size outputs: one pass over the image padded to the total stride
        padded = np.pad(image, ((0, -h % UNET_MULTIPLE), (0, -w % UNET_MULTIPLE), (0, 0)), mode="reflect")
        return {k: v[0, :, :h, :w].cpu() for k, v in model(to_input(padded[None]).to(device)).items()}
    margin = (window_in - window_out) // 2
    rows, cols = math.ceil(h / window_out), math.ceil(w / window_out)
    padded = np.pad(image, ((margin, margin + rows * window_out - h), (margin, margin + cols * window_out - w), (0, 0)),
                    mode="reflect")
    full: dict[str, torch.Tensor] = {}
    for r in range(rows):
        for c in range(cols):
            tile = padded[r * window_out : r * window_out + window_in, c * window_out : c * window_out + window_in]
            for key, value in model(to_input(tile[None]).to(device)).items():
                if key not in full:
                    full[key] = torch.zeros(value.shape[1], rows * window_out, cols * window_out)
                full[key][:, r * window_out : (r + 1) * window_out, c * window_out : (c + 1) * window_out] = value[0].cpu()
    return {k: v[:, :h, :w] for k, v in full.items()}


__all__ = ["NUCLEI", "predict_nuclei"]
