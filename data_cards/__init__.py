"""histosynth.data_cards: see ARCHITECTURE.md."""
