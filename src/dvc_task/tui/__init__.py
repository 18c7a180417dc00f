"""``dvc-task top``: a live monitor of jobs, workers and logs (Textual)."""
