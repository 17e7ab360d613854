"""Executable recipes: a release or a paper table as structured steps (source ... publish) run with caching.

spec.py loads and validates a recipe; runner.py plans, runs (skipping steps whose content key is unchanged) and
reports; steps.py holds one function per step kind, each calling the functions the CLI verbs call.
"""
