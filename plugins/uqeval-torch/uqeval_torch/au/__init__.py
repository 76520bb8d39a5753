"""Aleatoric-uncertainty methods: how one network models the ambiguity of its labels."""
