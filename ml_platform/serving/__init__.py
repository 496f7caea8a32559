"""Online serving: the prediction service (``ml-platform serve``) and its per-call audit trail.

Nothing here is imported by the code location: FastAPI, uvicorn and prometheus_client are
imported only by the service itself.
"""
