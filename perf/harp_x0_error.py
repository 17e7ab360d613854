"""Where is harp-inpaint's denoiser wrong? Its clean-image prediction inside the hole, per noise level, against a
mean-colour fill: an inpainter whose x0 prediction at high noise is worse than the mean colour of the known pixels
cannot start its sampling trajectory well, whatever the sampler does afterwards.

For the first N test patches with held-out mask j on patch j: noise each patch to timestep t (one fixed noise draw),
ask the snapshot's UNet for the noise, turn it into x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clip to
[-1, 1], and report the mean squared error inside the holes (images in [-1, 1]) beside the noise MSE and the
mean-fill error. With --ddim-steps, each snapshot also completes the same patches with that many DDIM steps and
reports the suite's masked PSNR, to tell a sampler too short from a denoiser that is wrong. Prints one line
per snapshot and timestep and writes a JSON record.

    .venv/bin/python perf/harp_x0_error.py --test runs/learning-curves-simulator-demo/data/sim-test \
        --snapshots runs/learning-curves-simulator-demo/curves/harp-inpaint/model/snapshots/step-00000400,\
runs/learning-curves-simulator-demo/curves/harp-inpaint/model/snapshots/step-00001600 --ddim-steps 20,50,200 \
        --out perf/harp_x0_error.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

TIMESTEPS = (10, 100, 300, 500, 700, 900, 999)


def hole_mse(x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over the hole's pixels and channels."""
    return float((((x - target) ** 2) * mask).sum() / (mask.sum() * target.shape[1]))


def main() -> None:
    from histosynth.atomic import write_text_atomic
    from histosynth.baselines.harp_inpaint.model import _to_tensor, model_input
    from histosynth.benchmark.tasks.completion import masked_psnr
    from histosynth.disk import iter_samples
    from histosynth.generators import load_generator
    from histosynth.masks import heldout_mask

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=Path, required=True, help="dataset folder of held-out test patches")
    parser.add_argument("--snapshots", required=True, help="comma-separated harp-inpaint model folders")
    parser.add_argument("--n", type=int, default=16, help="test patches (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draw (default 0)")
    parser.add_argument("--ddim-steps", default="", help="comma-separated DDIM step counts to sample with (optional)")
    parser.add_argument("--out", type=Path, required=True, help="JSON record")
    args = parser.parse_args()
    torch.set_num_threads(1)
    conditions = list(itertools.islice(iter_samples(args.test), args.n))
    patches = [s.image for s in conditions]
    image = _to_tensor(np.stack(patches), torch.device("cpu"))
    size = tuple(image.shape[2:])
    mask = torch.from_numpy(np.stack([heldout_mask(j, size) for j in range(len(patches))])[:, None].astype(np.float32))
    known = 1 - mask
    holes = mask[:, 0].numpy().astype(bool)
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(image.shape, generator=generator)
    cond_noise = torch.randn(image.shape, generator=generator)
    mean_fill = ((image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True)).expand_as(image)
    record = {"test": str(args.test), "n": len(patches), "mean_fill_hole_mse": hole_mse(mean_fill, image, mask),
              "snapshots": {}}
    print(f"mean-fill: hole MSE {record['mean_fill_hole_mse']:.4f}")
    for folder in args.snapshots.split(","):
        model = load_generator(folder, device="cpu")
        abar = model.scheduler.alphas_cumprod
        rows = []
        with torch.no_grad():
            for t in TIMESTEPS:
                steps = torch.full((len(patches),), t)
                x_t = model.scheduler.add_noise(image, noise, steps)
                eps = model.unet(model_input(image, mask, x_t, cond_noise), steps).sample
                x0 = ((x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1, 1)
                rows.append({"t": t, "abar": float(abar[t]), "eps_mse": hole_mse(eps, noise, mask),
                             "x0_hole_mse": hole_mse(x0, image, mask)})
                print(f"{Path(folder).name} t={t:4d} abar={float(abar[t]):.3f} eps MSE {rows[-1]['eps_mse']:.4f} "
                      f"x0 hole MSE {rows[-1]['x0_hole_mse']:.4f}", flush=True)
        record["snapshots"][Path(folder).name] = rows
        for steps in [int(k) for k in args.ddim_steps.split(",") if k]:
            done = model.sample(conditions, seed=args.seed, sampler="ddim", steps=steps, mask=holes)
            psnr = float(np.mean([masked_psnr(c.image, d.image, h)
                                  for d, c, h in zip(done, conditions, holes, strict=True)]))
            record.setdefault("ddim_psnr", {}).setdefault(Path(folder).name, {})[steps] = psnr
            print(f"{Path(folder).name} DDIM {steps} steps: masked PSNR {psnr:.2f} dB", flush=True)
    fills = [np.where(h[:, :, None], c.image[~h].mean(0).astype(np.uint8), c.image)
             for c, h in zip(conditions, holes, strict=True)]
    record["mean_fill_psnr"] = float(np.mean([masked_psnr(c.image, f, h)
                                              for f, c, h in zip(fills, conditions, holes, strict=True)]))
    print(f"mean-fill: masked PSNR {record['mean_fill_psnr']:.2f} dB")
    write_text_atomic(args.out, json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
