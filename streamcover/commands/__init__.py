"""The library's subcommands of the ``streamcover`` CLI, one module each (see ``streamcover.cli``).

The service commands (``demo``, ``send``, ``mic``, ``broker``) live in ``consumers.commands``;
``monitor`` and ``setlist`` are still here until they move there too (see ``services.py``).
"""
