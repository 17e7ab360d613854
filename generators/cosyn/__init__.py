"""CoSyn-style joint image + nuclei-label synthesis (see model.py)."""
