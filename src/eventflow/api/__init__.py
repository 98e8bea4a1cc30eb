"""The HTTP API: an app factory, its routes and dependencies."""

from eventflow.api.app import create_app

__all__ = ["create_app"]
