"""The `notifyctl` command: one module per command group, no business rules, no SQL."""
