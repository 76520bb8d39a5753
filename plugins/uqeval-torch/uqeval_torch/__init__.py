"""The reference model families of uqeval, in PyTorch.

A plugin of the ``uqeval`` entry-point group: the AU methods ``softmax``, ``ssn``,
``prob_unet`` and ``diffusion``, the EU methods ``none`` and ``ensemble``, the dataset
``synthetic``, and the commands ``uqeval train`` and ``uqeval predict``. All of them share
one attention UNet (:class:`uqeval_torch.backbone.AttentionUNet`).
"""

__version__ = "0.1.0"
