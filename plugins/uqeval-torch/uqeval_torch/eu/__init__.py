"""Epistemic-uncertainty methods: how training yields several plausible networks.

A method's module imports torch only inside its methods (``uqeval plugins`` lists the
methods without torch); MC dropout's layer types and mask hook, which need torch at
import, are in ``dropout_masks``.
"""
