"""Subcommands of the ``streamcover`` CLI, one module each (see ``streamcover.cli``)."""
