"""The ``evstate`` command line (docs/cli.md): one module per command group."""
