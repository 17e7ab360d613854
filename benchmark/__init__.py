"""histosynth.benchmark: see docs/ARCHITECTURE.md."""
