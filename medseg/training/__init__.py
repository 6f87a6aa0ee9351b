"""Training: one fold's loop, its epoch driver, checkpoints, logs and schedules, and
:func:`medseg.training.run.train` (prepare the run directory, then train folds)."""
