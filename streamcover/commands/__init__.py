"""The library's subcommands of the ``streamcover`` CLI, one module each (see ``streamcover.cli``).

The service commands (``demo``, ``monitor`` and ``setlist``, ``send``, ``mic``, ``broker``)
live in ``consumers.commands``.
"""
