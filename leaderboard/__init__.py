"""histosynth.leaderboard: see docs/ARCHITECTURE.md."""
