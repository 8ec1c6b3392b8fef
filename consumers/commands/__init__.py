"""The service subcommands of ``streamcover``, one module each (registered by ``consumers.cli``)."""
