"""The command line: `kdstudio` (main), its progress display and the sweep command."""

from kdstudio.cli.commands import main

__all__ = ["main"]
