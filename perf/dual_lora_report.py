"""The report of perf/dual_lora_compare.py: the Markdown tables of each dataset, the whole report with its settings
and stage times, and the picture of example rows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dual_lora_data import EMBEDDED_MPP, EMBEDDED_REGION, RESOLUTION  # perf/ is the script's folder, on sys.path


def cell(r: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    """One table cell: the value with its CI, scaled; "n/a" when there is none."""
    if r is None or r["value"] is None:
        return "n/a"
    text = f"{r['value'] * scale:.{digits}f}"
    if r.get("ci_low") is not None:
        text += f" [{r['ci_low'] * scale:.{digits}f}, {r['ci_high'] * scale:.{digits}f}]"
    return text


def completion_table(scores: dict[str, dict], lpips_run: bool) -> str:
    """The completion table of one dataset: PSNR, SSIM and masked LPIPS per completer."""
    from histosynth.benchmark.lpips_masked import MODES

    lpips_cols = [f"LPIPS {m}" for m in MODES]
    lines = ["| completion (held-out masks v1) | N | PSNR in mask, dB [95% CI] | SSIM in mask [95% CI] | "
             + " | ".join(lpips_cols) + " |", "|---|---:|---|---|" + "---|" * len(lpips_cols)]
    for name, s in scores.items():
        lpips = [cell(s.get(f"lpips-{m}"), 4) if lpips_run else "not run (weights)" for m in MODES]
        lines.append(f"| {name} | {s['n']} | {cell(s.get('psnr-masked'), 2)} | {cell(s.get('ssim-masked'), 3)} | "
                     + " | ".join(lpips) + " |")
    return "\n".join(lines) + "\n"


def synthesis_table(scores: dict[str, dict]) -> str:
    """The synthesis table of one dataset: FD and KID per generated set."""
    lines = ["| synthesis vs held-out real (effnet-lite0) | N | FD [95% CI] | KID x 1e3 [95% CI] |", "|---|---:|---|---|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s['fd']['n']} | {cell(s['fd'], 2)} | {cell(s['kid'], 2, 1e3)} |")
    return "\n".join(lines) + "\n"


def draw_examples(sets: dict[str, dict[str, Path]], out: Path, rows_per_dataset: int = 3) -> Path:
    """Rows: held-out patches of each dataset; columns: real, masked input, each completion, synthesis samples."""
    import matplotlib

    matplotlib.use("Agg")
    from itertools import islice

    import matplotlib.pyplot as plt

    from histosynth.atomic import atomic_file
    from histosynth.disk import iter_samples

    columns = ["held-out real", "masked (v1)", "mean-fill", "harp-inpaint", "dual-lora completion",
               "dual-lora synthesis", "htd (held-out map)"]
    keys = ["real", "masked", "mean-fill", "harp-inpaint", "dual-lora", "synth-dual-lora", "synth-htd"]
    total = rows_per_dataset * len(sets)
    fig, axes = plt.subplots(total, len(columns), figsize=(1.35 * len(columns), 1.4 * total + 0.3), squeeze=False)
    r = 0
    for dataset, paths in sets.items():
        images = {k: [s for s in islice(iter_samples(p), rows_per_dataset)] for k, p in paths.items()}
        for i in range(rows_per_dataset):
            mask = images["dual-lora"][i].completion_mask
            masked = images["real"][i].image.copy()
            masked[mask] = (255, 255, 255)
            pictures = {k: v[i].image for k, v in images.items()} | {"masked": masked}
            for c, key in enumerate(keys):
                ax = axes[r][c]
                ax.imshow(pictures[key], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(columns[c], fontsize=6)
                if c == 0:
                    ax.set_ylabel(dataset, fontsize=6)
            r += 1
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)
    return out


def dataset_report(dataset: str, r: dict[str, Any], args: argparse.Namespace) -> str:
    """One dataset's section: its split, the training of each model, both tables and the paired differences."""
    split = ("by slide: sim-0..sim-{} train, sim-100.. held out; 64 px at 2 um/px".format(args.train_slides - 1)
             if dataset == "simulator" else
             f"by region ({EMBEDDED_REGION} px level-0 blocks); 64 px at {EMBEDDED_MPP} um/px; pseudo labels fitted on train")
    m = r["models"]
    train_lines = "\n".join(f"- {name}: {v['steps']} steps x batch {v['batch']} on {v['patches']} patches, lr {v['lr']} "
                            f"({v['lr_schedule']}), EMA {v['ema_decay']}, {v['seconds']:.0f} s ({v['images_per_second']} img/s), "
                            f"final loss {v['final_loss']}"
                            + (f" (resumed from step {v['resumed_from_step']}: time of the resumed part)" if v['resumed_from_step'] else "") + (f", per-task loss means {v['loss_means']}" if name == "dual-lora" else "")
                            for name, v in m.items())
    diff_lines = "\n".join(f"- {pair}, {metric}: {cell(d, 4)}" + (f" ({d['relative'] * 100:+.1f} % of {pair.split(' - ')[1]}'s mean)"
                                                                  if d and d.get("relative") is not None else "")
                           for pair, by_metric in r["paired_differences"].items() for metric, d in by_metric.items())
    return (f"### {dataset} ({split})\n\n{r['n_train']} training patches, {r['n_heldout']} held-out patches.\n\n"
            f"Training (1 torch thread):\n{train_lines}\n\n" + completion_table(r["completion"], r["lpips"])
            + f"\nPaired differences (mean over the {r['n_heldout']} held-out patches, "
            f"bootstrap 95% CI):\n{diff_lines}\n\n" + synthesis_table(r["synthesis"]) + "\n")


def render_report(results: dict[str, dict[str, Any]], s: dict[str, Any], args: argparse.Namespace,
                  timings: dict[str, float], compute: dict[str, Any]) -> str:
    """The whole results.md: the settings, each dataset's tables and the time of every stage."""
    masks = next(iter(results.values()))["masks"]
    header = (f"Every model: demo preset at {RESOLUTION} px, {s['steps']} training steps at batch {args.batch} "
              f"(dual-lora alternates tasks: {s['steps'] // 2} steps per adapter), sampler {args.sampler} with "
              f"{s['sample_steps']} steps, seed {args.seed}; {args.threads} torch thread(s), OMP_NUM_THREADS="
              f"{compute['OMP_NUM_THREADS']}. Masks: {masks}. Completion CIs: percentile bootstrap of the mean over "
              f"patches ({s['bootstrap']} resamples); FD/KID CIs: {s['fd_bootstrap']} bootstrap replicates. FD is biased "
              "upward at this N; read KID. Masked LPIPS: " + ("run" if args.lpips_backbone else
                                                              "not run (no torchvision backbone weights offline)") + ".\n\n")
    stages = "\n".join(f"- {v:7.1f} s  {k}" for k, v in timings.items())
    return header + "".join(dataset_report(d, r, args) for d, r in results.items()) + \
        f"Stages (seconds of the run that did the work):\n\n{stages}\n- {compute['total_stage_seconds']:7.1f} s  total\n"
