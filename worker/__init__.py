"""Video decoding, face tracking, feature extraction, scoring, the Celery app and tasks, and the
job records both the API and the workers use (`worker.jobs`, `worker.settings`).

`worker/` imports `model/` only; it never imports `service/` (tests/test_layers.py checks it).
"""
