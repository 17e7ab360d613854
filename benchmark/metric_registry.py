"""Every metric a results file may hold: its direction, unit, range and where its formula comes from.

The leaderboard ranks with `higher_is_better` from here, never from a file, so a run cannot flip a metric's
direction; results files are validated against this table on load (an unknown metric name is an error).

    from histosynth.benchmark.metric_registry import metric_spec
    metric_spec("fd").higher_is_better          # False
    metric_spec("lpips-layer-masked").unit      # "LPIPS distance"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from histosynth.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    """One metric: name, direction, unit, the range of valid values, and the formula's reference."""

    name: str
    higher_is_better: bool
    unit: str
    reference: str
    low: float = -math.inf
    high: float = math.inf
    floor: float | None = None  # what a model that predicts nothing scores (None: no such floor)
    covariance: bool = False  # estimated from feature covariances: needs as many samples as feature dimensions

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (infinite bounds become None)."""
        return {"name": self.name, "higher_is_better": self.higher_is_better, "unit": self.unit,
                "reference": self.reference, "low": None if math.isinf(self.low) else self.low,
                "high": None if math.isinf(self.high) else self.high}


FID_REF = "Heusel et al. 2017, arXiv:1706.08500 (Frechet distance of Gaussian fits to encoder features)"
PRDC_REF = "Naeem et al. 2020, arXiv:2002.09797 (k = 5 nearest neighbors)"
HOVER = "vqdang/hover_net compute_stats.py"
PQ_MATCH = ("Kirillov et al. 2019, arXiv:1801.00868, with HoVer-Net/CoNIC matching (get_fast_pq, CoNIC get_pq: "
            "IoU > 0.5 pairs)")
PQ_REF = (PQ_MATCH + "; TP/FP/FN/IoU summed over all test images before the ratio (CoNIC compute_stats' "
          "aggregation), so an image with no nucleus on either side adds nothing. No published table pools binary "
          "PQ this way: compare per-image tables with pq_image_mean. In nuclei task v1 files "
          "the value is the mean over images with an empty image scoring 1 (superseded)")
PQ_IMAGE_REF = (PQ_MATCH + f"; mean of the per-image values as {HOVER} run_nuclei_inst_stat (the HoVer-Net "
                "paper's segmentation table: CoNSeP, Kumar, CPM-17), images with no nucleus on either side left out")
AJI_REF = (f"Kumar et al. 2017 (MoNuSeg); {HOVER} run_nuclei_inst_stat, mean over images with a nucleus on either "
           "side (the HoVer-Net paper's segmentation table)")
PANNUKE_REF = ("TissueImageAnalytics/PanNuke-metrics run.py (Gamper et al. 2020, arXiv:2003.10778, mPQ/bPQ "
               "tables): per image over the classes in its ground truth, then per tissue type, then over tissues; "
               "the nuclei task scores its test set as one tissue")
F1D_REF = (f"HoVer-Net detection F1_d ({HOVER} run_nuclei_type_stat; the HoVer-Net paper's classification "
           "tables): pair_coordinates, one Hungarian assignment of least total distance, pairs beyond 12 px at 40x "
           "(scaled to the mpp) dropped. In nuclei task v1 files: the f1_detection_max_pairs pairing (superseded)")
PSNR_CAP_DB = 10 * math.log10(255.0**2 * 12)  # uint8 images: MSE >= 1/12 level² after rounding; MSE <= 255²
LPIPS_REF = "Zhang et al. 2018, arXiv:1801.03924, masked as in docs/ARCHITECTURE.md (masked LPIPS modes)"
SEG_REF = "IoU/Dice per class from one pooled confusion matrix, mean over foreground classes present"

_FIXED = [
    MetricSpec("fd", False, "squared feature distance", FID_REF, low=0.0, covariance=True),
    # unbounded below on purpose: the N -> inf extrapolation and the unbiased MMD² estimate can be slightly negative
    MetricSpec("fd-inf", False, "squared feature distance", "Chong & Forsyth 2020, arXiv:1911.07023 (FD at N -> inf)",
               covariance=True),
    MetricSpec("kid", False, "squared MMD (cubic polynomial kernel)", "Binkowski et al. 2018, arXiv:1801.01401"),
    MetricSpec("precision", True, "fraction", PRDC_REF, 0.0, 1.0),
    MetricSpec("recall", True, "fraction", PRDC_REF, 0.0, 1.0),
    MetricSpec("density", True, "ratio", PRDC_REF, low=0.0),
    MetricSpec("coverage", True, "fraction", PRDC_REF, 0.0, 1.0),
    MetricSpec("memorization", False, "fraction of generated samples flagged",
               "nearest-neighbor distance ratio test against the training set (histosynth.benchmark.memorization)",
               0.0, 1.0),
    MetricSpec("psnr-masked", True, "dB", "PSNR over the masked RGB values, capped at MSE 1/12", 0.0, PSNR_CAP_DB),
    MetricSpec("ssim-masked", True, "SSIM", "Wang et al. 2004, mean of the SSIM map over masked pixels", -1.0, 1.0),
    MetricSpec("miou", True, "IoU", SEG_REF, 0.0, 1.0, floor=0.0),
    MetricSpec("mean_dice", True, "Dice", SEG_REF, 0.0, 1.0, floor=0.0),
    MetricSpec("image_miou", True, "IoU", SEG_REF + "; mean over images", 0.0, 1.0),
    MetricSpec("label_consistency_miou", True, "IoU",
               "segmenter trained on real patches, mIoU of its maps of generated images against their condition maps",
               0.0, 1.0, floor=0.0),
    MetricSpec("pq", True, "PQ", PQ_REF, 0.0, 1.0, floor=0.0),
    MetricSpec("dq", True, "DQ", PQ_REF.replace("binary PQ", "binary DQ"), 0.0, 1.0),
    MetricSpec("sq", True, "SQ", PQ_REF.replace("binary PQ", "binary SQ"), 0.0, 1.0),
    MetricSpec("pq_image_mean", True, "PQ", PQ_IMAGE_REF, 0.0, 1.0, floor=0.0),
    MetricSpec("dq_image_mean", True, "DQ", PQ_IMAGE_REF, 0.0, 1.0),
    MetricSpec("sq_image_mean", True, "SQ", PQ_IMAGE_REF, 0.0, 1.0),
    MetricSpec("aji", True, "AJI", AJI_REF + "; each true nucleus paired with its largest-IoU prediction "
               "(get_fast_aji)", 0.0, 1.0),
    MetricSpec("aji_plus", True, "AJI+", AJI_REF + "; one-to-one pairing of largest total IoU (get_fast_aji_plus)",
               0.0, 1.0),
    MetricSpec("mpq_plus", True, "mPQ+", "CoNIC challenge 2022 (Graham et al., arXiv:2111.14485; "
               "TissueImageAnalytics/CoNIC compute_stats.py): per-class counts summed over patches, mean over all "
               "classes, a class absent everywhere scoring 0 (the CoNIC leaderboard's mPQ+). In nuclei task v1 files such "
               "a class was left out of the mean (superseded)", 0.0, 1.0),
    MetricSpec("pannuke_mpq", True, "mPQ", PANNUKE_REF, 0.0, 1.0),
    MetricSpec("pannuke_bpq", True, "bPQ", PANNUKE_REF + "; classes merged, type-0 nuclei not counted", 0.0, 1.0),
    MetricSpec("f1_detection", True, "F1", F1D_REF, 0.0, 1.0),
    MetricSpec("f1_detection_max_pairs", True, "F1",
               "histosynth's alternative to f1_detection: the pairing with the most pairs within the radius, then "
               "the least total distance; matches no published table", 0.0, 1.0),
]
LPIPS_MODES = ("spatial-mean", "layer-masked", "bbox-crop")
"""Masked-LPIPS modes (histosynth.benchmark.lpips_masked.MODES, which a test checks against); each is `lpips-<mode>`."""
_FIXED += [MetricSpec(f"lpips-{mode}", False, "LPIPS distance", LPIPS_REF, low=0.0) for mode in LPIPS_MODES]
RATIO_SUFFIX = "_ratio_to_real"
F1_TYPE = MetricSpec("f1", True, "F1", f"HoVer-Net per-class F1_c ({HOVER} run_nuclei_type_stat; the HoVer-Net "
                     "paper's classification tables, F_c columns): weights [2, 2, 1, 1], TN = 0 as the released code "
                     "counts it. In nuclei task v1 files: the paper's formula with TN (now f1_with_tn)", 0.0, 1.0)
F1_TYPE_WITH_TN = MetricSpec("f1_with_tn", True, "F1", "HoVer-Net per-class F1_c with the paper's TN term (Graham "
                             "et al. 2019, the F_c formula); no released code outputs it", 0.0, 1.0)
PER_CLASS = {"iou": next(s for s in _FIXED if s.name == "miou"), "f1": F1_TYPE, "f1_with_tn": F1_TYPE_WITH_TN}
"""Per-class metrics `<family>/<class name>` (e.g. iou/stroma) take the direction of their family's mean."""


def _derived_spec(name: str) -> MetricSpec | None:
    """The spec of a name built from a registered one: `<metric>_ratio_to_real`, the synthetic/real ratio of a
    metric, or `<family>/<class>`, one class of a per-class family; None for any other name."""
    if name.endswith(RATIO_SUFFIX) and name[: -len(RATIO_SUFFIX)] in list(METRICS):  # registered names only
        base = METRICS.get(name[: -len(RATIO_SUFFIX)])
        return MetricSpec(name, base.higher_is_better, "ratio (synthetic-trained / real-trained, paired by seed)",
                          base.reference, low=0.0)
    family, slash, class_name = name.partition("/")
    if slash and class_name and family in PER_CLASS:
        base = PER_CLASS[family]
        return MetricSpec(name, base.higher_is_better, base.unit, f"{base.reference}; class {class_name!r} only",
                          base.low, base.high)
    return None


METRICS: Registry[MetricSpec] = Registry(
    "metric", resolver=_derived_spec,
    patterns=(f"<metric>{RATIO_SUFFIX}", *(f"{family}/<class>" for family in PER_CLASS)))
"""Every metric name a results file may carry: the fixed specs, and the names `_derived_spec` builds from them."""
for _spec in _FIXED:
    METRICS.register(_spec.name, _spec, _spec.unit)


def metric_spec(name: str) -> MetricSpec:
    """The spec of metric `name` (an unknown name raises RegistryError, suggesting the closest)."""
    return METRICS.get(name)
