"""A synthetic marketplace with fraud campaigns and late chargebacks (see marketplace.py)."""
