"""Pipelines above the generators and the benchmark: executable recipes and the demo.

A recipe is a release or a paper table as structured steps (source ... publish) run with caching: spec.py loads and
validates a recipe, kinds.py is the registry of step kinds, runner.py plans, runs (skipping steps whose content key
is unchanged) and reports, steps.py and curve.py hold the step functions, release.py the release card. demo.py is
`histosynth demo`'s pipeline. The CLI (histosynth.commands) parses and calls these; the leaderboard's tracks run
recipes too.
"""
