"""Video decoding, face tracking, feature extraction, Celery app and tasks.

`worker/` imports `model/` and, for the job store and settings, the non-web parts of `service/`.
"""
