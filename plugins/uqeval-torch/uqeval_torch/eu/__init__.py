"""Epistemic-uncertainty methods: how training yields several plausible networks."""
