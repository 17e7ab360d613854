"""The seed papers' claims, tested at the end of the learning curves: each claim names the curve points it reads,
the goal it must reach, and says whether it is met, with the interval it rests on and whether the curve was still
improving at its last snapshot (an unmet goal on a rising curve asks for more budget; on a flat one, for a look at
the model).

The numbers come from a learning-curve run folder (recipes/learning-curves-*.yaml): `curves/<generator>/points/
step-N/point.json` and the results files beside them. Completion claims compare per-image masked PSNR/SSIM paired
over the same held-out masks, against each other and against the mean-fill floor (the hole painted with the known
pixels' mean color), which is computed here from the test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from histosynth.recipes.floors import mean_fill_scores

if TYPE_CHECKING:
    from histosynth.recipes.spec import Step, StepContext

KID = "distribution:kid:effnet-lite0@fake"
LABEL_CONSISTENCY = "label-consistency:label_consistency_miou@fake"
LABEL_CEILING = "label-consistency:label_consistency_miou@real-test"
TSTR_RATIO = "tstr-deeplabv3plus:miou_ratio_to_real@train:synthetic"
PQ_RATIO = "tstr-hovernet:pq_ratio_to_real@train:synthetic"
# the reference row that passes the held-out conditions' real patches through: scored as a submission, its TSTR
# ratio is real data's at the synthetic sets' N
REAL_CEILING = "real-heldout"
BOOTSTRAP = 2000
# a curve is "still improving" when its last point beats the one two snapshots earlier by more than this many of
# the last point's CI half-widths
TREND_MARGIN = 1.0


@dataclass
class Point:
    """One snapshot of one curve: its step, cumulative training seconds, metrics and results folder."""

    step: int
    seconds: float | None
    metrics: dict[str, dict[str, Any]]
    extra: dict[str, Any]
    folder: Path

    def metric(self, key: str) -> dict[str, Any] | None:
        if key.startswith("extra:"):
            found = self.extra.get(key.split(":", 1)[1])
            return None if found is None else {"value": found["value"], "ci_low": found["ci"][0],
                                                "ci_high": found["ci"][1]}
        return self.metrics.get(key)

    def per_sample(self, metric: str) -> np.ndarray | None:
        """The per-image values of a completion metric (psnr-masked, ssim-masked), None if not scored."""
        path = self.folder / "results" / "completion.json"
        if not path.is_file():
            return None
        run = json.loads(path.read_text(encoding="utf-8"))
        found = next((r for r in run["results"] if r["metric"] == metric and r.get("value") is not None), None)
        return None if found is None else np.asarray(found["extra"]["per_sample"], np.float64)


def load_points(run: Path, generator: str) -> list[Point]:
    """The finished points of `generator`'s curve in `run`, by step (empty if none yet)."""
    points = []
    for path in sorted((Path(run) / "curves" / generator / "points").glob("step-*/point.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        points.append(Point(int(data["step"]), data.get("train_seconds"), data["metrics"], data.get("extra", {}),
                            path.parent))
    return sorted(points, key=lambda p: p.step)


@dataclass
class Verdict:
    """A claim's outcome: the measured text, met (None: not measurable yet), the step and minutes it was measured
    at, and the curve's trend there."""

    measured: str
    met: bool | None
    at: str = ""
    trend: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """One paper's claim and the goal that tests it here."""

    paper: str
    claim: str
    goal: str
    generators: tuple[str, ...]
    check: Callable[[dict[str, list[Point]], Path], Verdict]


def _fmt(metric: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if metric is None or metric.get("value") is None:
        return "n/a"
    text = f"{metric['value'] * scale:.{digits}g}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" [{metric['ci_low'] * scale:.{digits}g}, {metric['ci_high'] * scale:.{digits}g}]"
    return text


def trend(points: list[Point], key: str, higher_is_better: bool) -> str:
    """"still improving", "flat" or "getting worse" over the last two snapshot intervals (see TREND_MARGIN)."""
    values = [p.metric(key) for p in points]
    values = [v for v in values if v is not None and v.get("value") is not None]
    if len(values) < 3:
        return "too few points"
    last, before = values[-1], values[-3]
    half = ((last["ci_high"] - last["ci_low"]) / 2 if last.get("ci_low") is not None else 0.0) * TREND_MARGIN
    change = (last["value"] - before["value"]) * (1 if higher_is_better else -1)
    return "still improving" if change > half else "getting worse" if change < -half else "flat"


def _at(point: Point) -> str:
    minutes = f", {point.seconds / 60:.0f} min" if point.seconds else ""
    return f"step {point.step}{minutes}"


def _last(curves: dict[str, list[Point]], name: str) -> Point | None:
    return curves[name][-1] if curves.get(name) else None


def _last_common(curves: dict[str, list[Point]], first: str, second: str) -> tuple[Point, Point] | None:
    """Both curves' points at the last step both have scored (a comparison at equal training steps), or None."""
    steps = {p.step for p in curves.get(first, [])} & {p.step for p in curves.get(second, [])}
    if not steps:
        return None
    step = max(steps)
    return (next(p for p in curves[first] if p.step == step), next(p for p in curves[second] if p.step == step))


def _conditioning_pays(curves: dict[str, list[Point]], run: Path) -> Verdict:
    pair = _last_common(curves, "htd", "htd-unconditional")
    if pair is None or pair[0].metric(KID) is None or pair[1].metric(KID) is None:
        return Verdict("not measured yet", None)
    htd, floor = pair
    a, b = htd.metric(KID), floor.metric(KID)
    met = a["ci_high"] < b["ci_low"]
    upto = [p for p in curves["htd"] if p.step <= htd.step]
    return Verdict(f"KID x10^3: HTD {_fmt(a, 1e3)} vs unconditional {_fmt(b, 1e3)}", met, _at(htd),
                   trend(upto, KID, False), {"htd": a, "unconditional": b})


def reference_metric(run: Path, key: str, subject: str = REAL_CEILING) -> dict[str, Any] | None:
    """`key` as the run's reference row `subject` scored it (references/<subject>/*.json), None if not scored."""
    from histosynth.recipes.curve import summarize

    return summarize(sorted((Path(run) / "references" / subject).glob("*.json"))).get(key)


def _same_n_ceiling(ceiling: dict[str, Any] | None) -> str:
    """Text for the ratio the real patches of the same conditions reach (`reference_metric`): the ceiling at the
    synthetic set's size (the real-trained row the ratio divides by trains on the whole, larger training set)."""
    return "" if ceiling is None else f"; real patches of the same maps (the ceiling at this N): {_fmt(ceiling)}"


def _ratio_goal(generator: str, key: str, goal: float, label: str) -> Callable[[dict[str, list[Point]], Path], Verdict]:
    def check(curves: dict[str, list[Point]], run: Path) -> Verdict:
        last = _last(curves, generator)
        metric = last.metric(key) if last else None
        if metric is None:
            return Verdict("not measured yet", None)
        seeds = metric.get("seeds")
        where = f" over {len(seeds)} seeds" if isinstance(seeds, list) else ""
        low, high = metric.get("ci_low"), metric.get("ci_high")
        # the goal is judged on the point estimate; an interval reaching across it is said beside it
        caveat = f" (the CI reaches across {goal})" if low is not None and high is not None and low < goal <= high else ""
        ceiling = reference_metric(run, key)
        return Verdict(f"{label} {_fmt(metric)}{where}{caveat}{_same_n_ceiling(ceiling)}", metric["value"] >= goal,
                       _at(last), trend(curves[generator], key, True), {key: metric, "ceiling": ceiling})
    return check


def _follows_map(curves: dict[str, list[Point]], run: Path) -> Verdict:
    last = _last(curves, "htd")
    fake, real = (last.metric(LABEL_CONSISTENCY), last.metric(LABEL_CEILING)) if last else (None, None)
    if fake is None or real is None:
        return Verdict("not measured yet", None)
    ratio = fake["value"] / real["value"]
    return Verdict(f"mIoU {_fmt(fake)} against the real ceiling {_fmt(real)}: {ratio:.2f}x", ratio >= 0.8,
                   _at(last), trend(curves["htd"], LABEL_CONSISTENCY, True), {"fake": fake, "real": real})


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired images with its percentile bootstrap 95 % interval."""
    from histosynth.benchmark.tasks.completion import mean_interval

    mean, low, high = mean_interval(a - b, BOOTSTRAP, seed)
    return {"value": mean, "ci_low": low, "ci_high": high, "n": int(len(a))}


def _completion_beats(curves: dict[str, list[Point]], run: Path) -> Verdict:
    pair = _last_common(curves, "dual-lora", "harp-inpaint")
    if pair is None:
        return Verdict("not measured yet", None)
    a, b = pair
    lora = [p for p in curves["dual-lora"] if p.step <= a.step]
    floor = mean_fill_scores(run)
    parts, met, numbers = [], True, {}
    for metric, unit in (("psnr-masked", " dB"), ("ssim-masked", "")):
        mine, theirs = a.per_sample(metric), b.per_sample(metric)
        if mine is None or theirs is None or floor is None or len(mine) != len(theirs) or len(floor[metric]) < len(mine):
            return Verdict("not measured yet", None)
        vs_harp = paired_difference(mine, theirs)
        # the curves complete the test set's first n patches (row j, held-out mask j); the floor fills every one
        vs_fill = paired_difference(mine, floor[metric][: len(mine)])
        numbers[metric] = {"vs_harp_inpaint": vs_harp, "vs_mean_fill": vs_fill}
        met = met and vs_harp["ci_low"] > 0 and vs_fill["ci_low"] > 0
        parts.append(f"{metric} {mine.mean():.3g}{unit}: {_fmt(vs_harp)} over harp-inpaint, {_fmt(vs_fill)} over "
                     "mean-fill")
    return Verdict("; ".join(parts), met, _at(a), trend(lora, "completion:psnr-masked@fake", True), numbers)


def _joint_labels(curves: dict[str, list[Point]], run: Path) -> Verdict:
    last = _last(curves, "cosyn")
    if last is None:
        return Verdict("not measured yet", None)
    ratio, share = last.metric(PQ_RATIO), last.extra.get("class_share")
    chance = last.extra.get("class_chance")
    if ratio is None or share is None or chance is None:
        return Verdict("not measured yet", None)
    above = share["ci"][0] > chance
    return Verdict(f"PQ ratio {_fmt(ratio)}{_same_n_ceiling(reference_metric(run, PQ_RATIO))}; class agreement {share['value']:.3g} [{share['ci'][0]:.3g}, "
                   f"{share['ci'][1]:.3g}] vs chance {chance:.3g}", ratio["value"] >= 0.8 and above, _at(last),
                   trend(curves["cosyn"], PQ_RATIO, True), {"pq_ratio": ratio, "class_share": share,
                                                            "chance": chance})


def _beside(generator: str) -> Callable[[dict[str, list[Point]], Path], Verdict]:
    def check(curves: dict[str, list[Point]], run: Path) -> Verdict:
        last = _last(curves, generator)
        if last is None:
            return Verdict("not measured yet", None)
        text = (f"KID x10^3 {_fmt(last.metric(KID), 1e3)}; label consistency {_fmt(last.metric(LABEL_CONSISTENCY))}; "
                f"TSTR ratio {_fmt(last.metric(TSTR_RATIO))}")
        return Verdict(text, None, _at(last), trend(curves[generator], KID, False))
    return check


CLAIMS = (
    Claim("HTD", "conditioning pays for realism (FD 6x lower than unconditional)",
          "KID below the unconditional ablation's, CIs apart", ("htd", "htd-unconditional"), _conditioning_pays),
    Claim("HTD", "synthetic data replaces real for DeepLabv3+ (0.71 vs 0.72 IoU)",
          "TSTR mIoU ratio synthetic/real >= 0.9 (>= 5 seeds)", ("htd",),
          _ratio_goal("htd", TSTR_RATIO, 0.9, "ratio")),
    Claim("HTD", "follows its map", "label-consistency mIoU >= 0.8x the real ceiling", ("htd",), _follows_map),
    Claim("Dual-LoRA", "completion beats the inpainting baseline (masked LPIPS -15%)",
          "masked PSNR and SSIM above harp-inpaint and above mean-fill, paired CIs apart, at equal steps",
          ("dual-lora", "harp-inpaint"), _completion_beats),
    Claim("CoSyn", "joint labels train HoVer-Net as well as real",
          "PQ TSTR ratio >= 0.8; class agreement CI above chance", ("cosyn",), _joint_labels),
    Claim("pix2pix", "baseline", "reported beside the others at the same budget", ("pix2pix",), _beside("pix2pix")),
    Claim("SPADE", "baseline", "reported beside the others at the same budget", ("spade",), _beside("spade")),
)


def evaluate(run: Path) -> list[tuple[Claim, Verdict]]:
    """Every claim's verdict on one learning-curve run folder."""
    names = {g for claim in CLAIMS for g in claim.generators}
    curves = {name: load_points(run, name) for name in names}
    return [(claim, claim.check(curves, Path(run))) for claim in CLAIMS]


def markdown(verdicts: list[tuple[Claim, Verdict]]) -> str:
    """The claims table: paper, claim, goal, measured (with CIs), met, where and the trend there."""
    mark = {True: "met", False: "not met", None: "-"}
    lines = ["| paper | claim | goal here | measured at the last snapshot | goal | at | trend |",
             "|---|---|---|---|---|---|---|"]
    for claim, verdict in verdicts:
        lines.append(f"| {claim.paper} | {claim.claim} | {claim.goal} | {verdict.measured} | {mark[verdict.met]} | "
                     f"{verdict.at} | {verdict.trend} |")
    return "\n".join(lines) + "\n"


def snapshots_markdown(run: Path) -> str:
    """Per curve of the run, one row per scored snapshot: step, training minutes and the figure's metrics (with
    CIs); the progress of a run still going, in the numbers the figure will draw."""
    from histosynth.recipes.curve import PANELS, SCALE, metric_cell

    blocks = []
    for folder in sorted(p for p in (Path(run) / "curves").iterdir() if p.is_dir()):
        points = load_points(run, folder.name)
        panels = [p for p in PANELS if any(pt.metric(p[1]) is not None for pt in points)]
        if not points or not panels:
            continue
        lines = [f"{folder.name}:", "", "| step | minutes | " + " | ".join(p[0] for p in panels) + " |",
                 "|---:|---:|" + "---|" * len(panels)]
        for point in points:
            cells = [metric_cell(m, SCALE.get(key, 1.0)) if (m := point.metric(key)) is not None else "-"
                     for _title, key, *_ in panels]
            minutes = f"{point.seconds / 60:.0f}" if point.seconds else "-"
            lines.append(f"| {point.step} | {minutes} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def run_claims(step: Step, ctx: StepContext) -> dict[str, Any]:
    """out/claims.md (the table) and out/claims.json (each claim's verdict and numbers) from the run's curves; the
    `curves` field names the curve steps' folders, so the step runs after them."""
    from histosynth.atomic import atomic_directory

    verdicts = evaluate(ctx.run)
    record = [{"paper": claim.paper, "claim": claim.claim, "goal": claim.goal, "generators": list(claim.generators),
               "measured": verdict.measured, "met": verdict.met, "at": verdict.at, "trend": verdict.trend,
               "numbers": verdict.numbers} for claim, verdict in verdicts]
    with atomic_directory(ctx.run / step.fields["out"]) as staging:
        (staging / "claims.md").write_text(markdown(verdicts), encoding="utf-8")
        (staging / "claims.json").write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")
    return {"claims": len(record), "met": sum(r["met"] is True for r in record),
            "not_met": sum(r["met"] is False for r in record)}
