"""histosynth.data_cards: dataset cards and the registry of released / planned sets.

- `model`: the card model (`CardInfo`, `BenchmarkScore`), versions (`Version`, vX.Y.Z) and the license rule;
  standard library only.
- `card`: `render_card` (the README.md every dataset folder carries: Hub YAML + prose, from templates/) and
  `validate_card` (local checks, and the Hub's validator with `remote=True`).
- `sets`: `DATASETS`, one spec per released or planned set in cards/*.yaml, listed by `histosynth ls datasets`
  without importing `datasets`, `huggingface_hub` or torch.
"""
