"""histosynth.benchmark: see ARCHITECTURE.md."""
