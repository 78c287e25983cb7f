"""Serve a spaCy pipeline over HTTP: a JSON API, health checks and a page with displaCy.

Needs the ``serve`` extra (``pip install spacy-hybridner[serve]``: FastAPI and uvicorn).
"""

from .settings import API_KEY_ENV, ServeSettings

__all__ = ["API_KEY_ENV", "ServeSettings", "create_app", "serve"]


def __getattr__(name: str):
    # create_app and serve import FastAPI: only when asked for, so that the settings (and
    # the CLI's help) work without the extra installed.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .runner import serve

        return serve
    raise AttributeError(name)
