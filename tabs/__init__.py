"""One file per tab, each exposing `build(...)`; `api.py` adds the plain HTTP endpoints."""
