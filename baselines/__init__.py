"""histosynth.baselines: see docs/ARCHITECTURE.md."""
