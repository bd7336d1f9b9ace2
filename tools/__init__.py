"""Commands over the pipeline's results: the grid's leaderboard, experiment comparisons, PR reports.

Run as ``python -m tools.<name>``; they read what the stages wrote and never train.
"""
