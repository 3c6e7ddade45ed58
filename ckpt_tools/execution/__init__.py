"""Running jobs: one job, the local pool and Ray executors, progress, crash points."""
