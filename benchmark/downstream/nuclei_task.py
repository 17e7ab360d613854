"""The nuclei kind of the downstream task: HoVer-Net trained on instance maps, scored by PQ, AJI, mPQ+ and F1.

Batches are random crops rotated by k x 90 degrees and flipped like the tissue task's; the HoVer-Net targets are
computed on each augmented crop (as the official loader does: augment the instance map, then derive NP/HV/NC),
so nuclei cut by the crop border get their own center of mass. Predictions run on whole test images: the Unet
presets on the image padded to a multiple of 32, the paper preset (256 px in, 164 px out) tile by tile with the
image reflect-padded by the 46 px margin. Post-processing is hover_post.hover_postprocess at the test set's mpp.

Scores per seed (nuclei_metrics.py and nuclei_detection.py; each name says its convention, the metric registry
says which published table it matches):
- `pq`, `dq`, `sq`: HoVer-Net/CoNIC matching at IoU > 0.5, TP/FP/FN/IoU summed over the test images (a model that
  predicts nothing scores 0); `pq_image_mean`, `dq_image_mean`, `sq_image_mean`: the mean of per-image values
  (HoVer-Net compute_stats), images with no nucleus on either side left out.
- `aji`, `aji_plus`: HoVer-Net get_fast_aji / get_fast_aji_plus, the mean over the same images.
- `mpq_plus`: CoNIC (per-class counts summed over patches, mean over all classes, an absent class scoring 0).
- `pannuke_mpq`, `pannuke_bpq`: PanNuke-metrics run.py, with the test set as one tissue type.
- `f1_detection`, `f1/<class>`: HoVer-Net compute_stats (pair_coordinates pairing within 12 px at 40x scaled to the
  mpp; per-class F1 with TN = 0, weights [2, 2, 1, 1]); `f1_detection_max_pairs` pairs for the most pairs
  within the radius instead; `f1_with_tn/<class>` is the HoVer-Net paper's formula with its TN term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from histosynth.benchmark.downstream.data import LabeledSet, augment, crop_plan, to_input
from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.benchmark.downstream.kinds import Kind, TrainConfig
from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.schema import Nuclei

UNET_MULTIPLE = 32  # the Unet presets' total stride


class _Nuclei(Kind):
    label, model, headline = "nuclei", "hovernet", "pq"
    averaging = ("pq/dq/sq: TP/FP/FN/IoU summed over test images (IoU > 0.5 pairs), a model predicting nothing "
                 "scores 0; *_image_mean, aji, aji_plus: mean over the images with a nucleus on either side "
                 "(HoVer-Net compute_stats); mpq_plus: CoNIC, per-class counts summed over patches, mean over all "
                 "classes; pannuke_mpq/bpq: PanNuke run.py, the test set as one tissue; f1_detection, f1/<class>: "
                 "HoVer-Net compute_stats, Hungarian pairing of least total distance then the 12 px (40x, scaled by "
                 "mpp) cut, TN = 0, weights [2, 2, 1, 1], counts pooled over images; f1_detection_max_pairs: most "
                 "pairs within the radius; f1_with_tn/<class>: the paper's TN term "
                 "(benchmark/downstream/nuclei_metrics.py, nuclei_detection.py)")

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

    def check(self, data: LabeledSet, num_classes: int, config: TrainConfig) -> None:
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

    def batch(self, rng: np.random.Generator, data: LabeledSet, config: TrainConfig, group: Group = ONE_PROCESS
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

    def scores(self, model: nn.Module, test: LabeledSet, preset: str, device: str) -> dict[str, float]:
        schema = get_schema(test.schema)
        preds = predict_nuclei(model, test.images, preset, test.mpp, device)
        truth = [Nuclei.from_instance_map(test.schema, inst.astype(np.int64), np.concatenate([[0], t]).astype(np.int64))
                 for inst, t in zip(test.maps, test.types, strict=True)]
        return nuclei_scores(truth, preds, schema.names, test.mpp)


def nuclei_scores(truth: list, preds: list, class_names: Sequence[str], mpp: float) -> dict[str, float]:
    """The task's metrics of predictions (hover_post.NucleiPrediction) against true Nuclei, image by image; NaN
    where a metric is undefined (metric_results records it as such)."""
    from histosynth.benchmark.downstream.nuclei_detection import detection_f1, pairing_radius_px
    from histosynth.benchmark.downstream.nuclei_metrics import score_instances

    num_classes = len(class_names)
    inst = score_instances([(t.instances, t.class_ids, p.instances, p.types) for t, p in zip(truth, preds, strict=True)],
                           num_classes)
    dq_i, sq_i, pq_i = inst.pq.image_mean()
    out = {"pq": inst.pq.pq, "dq": inst.pq.dq, "sq": inst.pq.sq, "pq_image_mean": pq_i, "dq_image_mean": dq_i,
           "sq_image_mean": sq_i, "aji": inst.aji, "aji_plus": inst.aji_plus, "mpq_plus": inst.mpq.mpq_plus,
           "pannuke_mpq": inst.pannuke.mpq, "pannuke_bpq": inst.pannuke.bpq}
    centroids = ([t.centroids for t in truth], [t.class_ids for t in truth], [p.centroids for p in preds],
                 [p.types for p in preds])
    radius = pairing_radius_px(mpp)
    f1 = detection_f1(*centroids, radius, num_classes)
    out["f1_detection"] = f1.f1
    out["f1_detection_max_pairs"] = detection_f1(*centroids, radius, num_classes, pairing="max-pairs").f1
    for family, values in (("f1", f1.per_class_f1), ("f1_with_tn", f1.per_class_f1_with_tn)):
        for c, value in values.items():
            if not math.isnan(value):
                out[f"{family}/{class_names[c]}"] = value
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


__all__ = ["NUCLEI", "nuclei_scores", "predict_nuclei"]
