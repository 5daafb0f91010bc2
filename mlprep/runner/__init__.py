"""The notebook runner (``mlprep run``): notebooks as pipeline stages, run headless with papermill.
``inspection`` (a notebook's typed parameters), ``plan`` (which notebooks, wired how), ``execute``
(one notebook in a child process: progress, timeouts, dead kernels, secrets), ``run`` (``Runner``:
a run, skip by content hash, resume, summary), ``report`` (one HTML page), ``outputs`` (what a
notebook hands on)."""
