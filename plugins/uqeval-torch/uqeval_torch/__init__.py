"""The reference model families of uqeval, in PyTorch.

A plugin of the ``uqeval`` entry-point group (:mod:`uqeval_torch.plugin`). It contributes

- the AU methods ``softmax``, ``ssn``, ``prob_unet``, ``diffusion`` and ``tta``
  (:mod:`uqeval_torch.au`);
- the EU methods ``none``, ``dropout``, ``swag_diag``, ``swag`` and ``ensemble``
  (:mod:`uqeval_torch.eu`);
- the datasets ``synthetic``, ``lidc`` and ``chaksu`` (:mod:`uqeval_torch.data`);
- the commands ``uqeval train``, ``uqeval predict`` and ``uqeval study``;
- for a model of your own, the sources of :mod:`uqeval_torch.sources` and the writing
  loop :func:`uqeval_torch.writing.write_cube`, which ``uqeval predict`` runs too.

The trained methods share one attention UNet (:class:`uqeval_torch.backbone.AttentionUNet`).
"""

__version__ = "0.1.0"
