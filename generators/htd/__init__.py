"""HTD (HeteroTissue-Diffuse, arXiv:2509.17847): crop-and-map-conditioned diffusion. The model lives in
histosynth.generators.htd.model (imports torch); conditions.py is numpy-only."""
