"""histosynth.leaderboard: see ARCHITECTURE.md."""
