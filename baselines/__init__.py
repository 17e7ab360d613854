"""histosynth.baselines: see ARCHITECTURE.md."""
