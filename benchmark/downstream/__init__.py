"""Downstream utility: segmentation models trained on one dataset (synthetic, real or a mix) and tested on held-out
real data; tissue IoU (DeepLabv3+) and nuclei PQ (HoVer-Net style)."""
