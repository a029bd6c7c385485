"""Sub-commands of the ``egresswatch`` console script, one module per group."""
