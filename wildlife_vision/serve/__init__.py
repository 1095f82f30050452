"""`wildlife-vision serve`: the HTTP service (FastAPI on uvicorn) around one loaded model; needs the [serve] extra."""
