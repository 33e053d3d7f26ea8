"""The ``softswitch`` command line (typer): serve, demo, tools and the admin commands."""

from softswitch.cli.app import app, main

__all__ = ["app", "main"]
