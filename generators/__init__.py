"""histosynth.generators: see ARCHITECTURE.md."""
