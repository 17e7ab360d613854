"""Training speed of every built-in generator's demo preset: fp32 against bf16 autocast in histosynth's loop, and
the diffusion generators against a plain diffusers training loop over the identical networks.

The anchor is the loop of diffusers' unconditional-training example (examples/unconditional_image_generation):
noise, random timesteps, `DDPMScheduler.add_noise`, the networks' forward, MSE, `accelerator.backward`,
`clip_grad_norm_(..., 1.0)`, AdamW, an LR scheduler step, zero_grad; its defaults: fp32 (mixed_precision "no"), no
EMA. Its batches are random tensors made up front, so it pays nothing for data; histosynth's loop pays for its real
batch assembly (patch crops, augmentation, condition tensors), EMA and per-step RNGs. For HTD (and its ablations and
Dual-LoRA) the networks are deep copies of the generator's own UNet2DConditionModel (+ ControlNetModel); for
harp-inpaint and CoSyn its UNet2DModel; GANs have no diffusers anchor.

Rounds are interleaved: each round runs every (generator, setting) once, in the same order, so machine load
falls on all of them alike. Each measurement trains `--steps` optimizer steps and reports images/s over the steps
after the first two (kernel selection, first allocations). Threads: torch.set_num_threads(--threads).

    .venv/bin/python perf/bench_training_speed.py --threads 2 --rounds 3 --steps 8 --out /tmp/speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

DIFFUSION = ("htd", "htd-unconditional", "dual-lora", "cosyn", "harp-inpaint")
GANS = ("pix2pix", "spade")
WARMUP = 2


def write_data(root: Path, n: int) -> Path:
    """Simulator patches at the demo resolution (64 px), with tissue maps and nuclei."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    folder = root / "sim"
    if not folder.exists():
        write_dataset(build_source("simulator", n=n, size=64, seed=0, mpp=2.0), folder,
                      CardInfo("speed", "simulator patches for the training-speed benchmark"))
    return folder


def built(name: str, data: Path):
    """A demo-preset generator whose networks exist (trained one step in fp32, so the anchor can copy them)."""
    from histosynth.generators.registry import generator_class

    generator = generator_class(name).build("demo")
    generator.train(data, {"steps": 1, "progress": False, "mixed_precision": "no", "checkpoint_every": 0})
    return generator


COMPILED = "+compile"  # a precision label's suffix: the same precision with the loop's `compile` option on


def ours(name: str, data: Path, precision: str, steps: int) -> float:
    """Steady images/s of histosynth's loop on a fresh demo generator (`precision` may end in COMPILED)."""
    from histosynth.generators.registry import generator_class

    generator = generator_class(name).build("demo")
    report = generator.train(data, {"steps": steps, "progress": False, "mixed_precision": precision.removesuffix(COMPILED),
                                    "compile": precision.endswith(COMPILED), "checkpoint_every": 0})
    return float(report.extra["speed"]["steady_images_per_second"])


def anchor_parts(generator) -> tuple[list[torch.nn.Module], callable]:
    """Deep copies of the generator's diffusers networks and a forward(x_t, t, batch) over them."""
    if hasattr(generator, "denoiser") and generator.denoiser is not None:
        unet = copy.deepcopy(generator.denoiser.unet)
        controlnet = copy.deepcopy(generator.denoiser.controlnet)
        channels = controlnet.config.conditioning_channels if controlnet is not None else 0

        def forward(x_t, t, batch):
            context = x_t.new_zeros(x_t.shape[0], 1, unet.config.cross_attention_dim)
            down = mid = None
            if controlnet is not None:
                down, mid = controlnet(x_t, t, encoder_hidden_states=context, controlnet_cond=batch["condition"],
                                       return_dict=False)
            return unet(x_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample

        return [m for m in (unet, controlnet) if m is not None], forward, unet.config.in_channels, channels
    unet = copy.deepcopy(generator.unet)
    out = unet.config.out_channels

    def forward(x_t, t, batch):
        extra = batch["condition"]
        labels = batch.get("labels")
        return unet(torch.cat([x_t, extra], dim=1) if extra is not None else x_t, t, class_labels=labels).sample

    return [unet], forward, out, unet.config.in_channels - out


def anchor_inputs(unet, channels: int, condition_channels: int, batch_size: int,
                  resolution: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """The anchor's fixed batch, made up front: clean images, and the condition and class labels the UNet takes."""
    x0 = torch.randn(batch_size, channels, resolution, resolution)
    batch = {"condition": torch.randn(batch_size, condition_channels, resolution, resolution) if condition_channels
             else None}
    if getattr(unet.config, "num_class_embeds", None):
        batch["labels"] = torch.zeros(batch_size, dtype=torch.long)
    return x0, batch


def anchor(generator, precision: str, steps: int, batch_size: int, resolution: int) -> float:
    """Steady images/s of the plain diffusers loop over copies of the generator's networks."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    modules, forward, channels, condition_channels = anchor_parts(generator)
    # accelerate allows one precision per process; on the CPU its bf16 mode is torch.autocast around the forward,
    # which is what this does, so fp32 and bf16 anchors can share the process with histosynth's runs
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=steps)
    prepared = accelerator.prepare(*modules, optimizer)
    optimizer = prepared[-1]
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    x0, batch = anchor_inputs(modules[0], channels, condition_channels, batch_size, resolution)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch_size,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = forward(scheduler.add_noise(x0, noise, t), t, batch)
            loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return batch_size * (len(times) - WARMUP) / sum(times[WARMUP:])


def speed_arguments(description: str, generators: list[str], threads: int, n: int,
                    extra: dict[str, dict] | None = None) -> argparse.Namespace:
    """The options every training-speed script shares (and `extra`: option name -> add_argument keywords), parsed;
    torch's thread count set from --threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--generators", nargs="+", default=generators)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--n", type=int, default=n, help="training patches")
    parser.add_argument("--out", type=Path, required=True, help="JSON of every measurement")
    for name, options in (extra or {}).items():
        parser.add_argument(name, **options)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    compile_option = {"action": "store_true", "help": "also histosynth's loop in bf16 with its `compile` option (each "
                      "measurement pays its compilation in the first steps, left out of images/s)"}
    args = speed_arguments(__doc__.splitlines()[0], [*DIFFUSION, *GANS], torch.get_num_threads(), 96,
                           {"--compile": compile_option})
    from histosynth.speed import cpu_bf16_speedup, speed_record

    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.n)
        prototypes = {name: built(name, data) for name in args.generators if name in DIFFUSION}
        ours_precisions = ("no", "bf16", f"bf16{COMPILED}") if args.compile else ("no", "bf16")
        settings = [(name, "ours", precision) for name in args.generators for precision in ours_precisions]
        settings += [(name, "diffusers", precision) for name in prototypes for precision in ("no", "bf16")]
        rates: dict[str, list[float]] = {f"{n}|{loop}|{p}": [] for n, loop, p in settings}
        for round_index in range(args.rounds):
            for name, loop, precision in settings:
                if loop == "ours":
                    rate = ours(name, data, precision, args.steps)
                else:
                    generator = prototypes[name]
                    cfg = generator.preset.train
                    rate = anchor(generator, precision, args.steps, cfg.batch_size, generator.preset.model.resolution)
                rates[f"{name}|{loop}|{precision}"].append(rate)
                print(f"round {round_index} {name:18s} {loop:9s} {precision:12s} {rate:7.2f} img/s", flush=True)
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": speed_record("no"), "threads": args.threads,
              "bf16_probe_speedup": cpu_bf16_speedup(), "load_after": os.getloadavg(), "steps": args.steps,
              "rounds": args.rounds, "rates": rates,
              "median": {k: statistics.median(v) for k, v in rates.items()}}
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["median"], indent=1))


if __name__ == "__main__":
    main()
