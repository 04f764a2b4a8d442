"""The `checkout-risk` command line: one entry point for every job in the project."""
