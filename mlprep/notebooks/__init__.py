"""Notebooks as pipeline stages, run headless with papermill: ``inspection`` (typed parameters),
``plan`` (which notebooks, wired how), ``execute`` (one notebook in a child process: progress,
timeouts, dead kernels, secrets), ``runner`` (a run: skip by content hash, resume, summary),
``report`` (one HTML page), ``outputs`` (what a notebook hands on)."""
