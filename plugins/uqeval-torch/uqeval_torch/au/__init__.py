"""Aleatoric-uncertainty methods: how one network models the ambiguity of its labels.

A method's module imports torch only inside its methods (``uqeval plugins`` lists the
methods without torch); the networks and tensor functions that need torch at import are
in a module beside it (``ssn_network``, ``prob_unet_network``, ``diffusion_process``).
"""
