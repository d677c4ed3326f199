"""FastAPI service, settings, job store, storage, web form and clients."""
