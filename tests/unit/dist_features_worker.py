"""Run by torchrun from test_features.py: featurize a dataset across processes and save the merged statistics."""

import sys

import torch.distributed as dist

from histosynth.benchmark.features import extract_features


def main() -> None:
    dataset, out, distributed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    run = extract_features(dataset, ["effnet-lite0"], batch_size=4, keep=100, use_cache=False, distributed=distributed, progress=False)
    result = run.encoders["effnet-lite0"]
    if not distributed or dist.get_rank() == 0:
        result.stats.save(out + ".stats.npz")
        import numpy as np

        np.save(out + ".features.npy", result.features)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
