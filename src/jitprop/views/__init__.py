"""What a learner sees of a run: verdicts on fit, and (as they land) the coach, lr-find, sweeps, checks and explain."""
