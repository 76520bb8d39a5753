"""``dropout``: Monte Carlo dropout (Gal & Ghahramani 2016): members are one network thinned by fixed masks.

A member is **one dropout mask per layer, fixed**: one thinned network, as an ensemble
member is one network and a SWAG member one draw of the weights. Every dropout layer of
member ``k`` multiplies its input by a mask drawn once for ``(seed, k, layer)``, the
same for every image, for all of the member's AU samples and for every network pass
inside them (a diffusion sample's denoising steps, TTA's transforms). Model variance
therefore shows up between members only, never inside a member's AU samples.

The masks come from their own generators, never from the global torch generator, so a
member's samples do not depend on the masks of the other members, and the AU method's
own randomness (an SSN's logit noise, a diffusion model's starting noise) is the same
with and without dropout.

For the trained method the network is trained once with channel-wise dropout (p = 0.2,
one per ResBlock, as the study) and predicted with its EMA weights. Any ``nn.Module``
with dropout layers works the same way: ``MCDropout(model, members=10)``. The dropout
layers it finds and the hook that fixes their masks are in :mod:`uqeval_torch.eu.dropout_masks`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from uqeval import UQEvalError
from uqeval.contracts import TrainRoutine

if TYPE_CHECKING:
    from torch import nn


class MCDropout:
    """Monte Carlo dropout: members are one network, each thinned by its own fixed dropout masks.

    As the ``dropout`` EU method (``MCDropout()``) it trains one network with dropout
    ``probability``; as a source for your own model (``MCDropout(model, members=10)``) it
    samples ``model``'s own dropout layers (``nn.Dropout``, ``Dropout1d/2d/3d``,
    ``AlphaDropout``, ``FeatureAlphaDropout`` and their subclasses, also inside
    third-party models). Every other module (batch and group norm, …) is in evaluation
    mode. Functional dropout (``F.dropout(x, training=True)`` in ``forward``) cannot be
    found this way and is not counted.

    Parameters
    ----------
    model : your network (none for the trained method); refused if it holds no dropout module.
    members : members per image (default 10).
    probability : the dropout probability the trained method builds into the network.
    outputs : what ``model`` returns, ``"logits"`` (default) or ``"probabilities"``.

    A member's masks depend on the seed and the member's number only
    (:meth:`mask_seed`), so a member is the same thinned network for every image, batch
    size and device.
    """

    name = "dropout"
    description = "MC dropout: one network, channel-wise dropout p = 0.2, one fixed mask per member (default 10)"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        members: int = 10,
        probability: float = 0.2,
        outputs: str = "logits",
    ) -> None:
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise UQEvalError(f"MCDropout: members must be a positive integer, got {members!r}")
        if not 0.0 < probability < 1.0:
            raise UQEvalError(f"MC dropout: the dropout probability must lie in (0, 1), not {probability}")
        self.default_members = members
        self.probability = probability
        self.outputs = outputs
        self.models = None
        self.n_dropout_layers = 0
        if model is None:
            return
        from uqeval_torch.eu.dropout_masks import DROPOUT_TYPES, dropout_layers
        from uqeval_torch.members import prepared

        self.models = prepared([model], "MCDropout", outputs)
        self.n_dropout_layers = len(dropout_layers(model))
        if not self.n_dropout_layers:
            raise UQEvalError(
                f"MCDropout: model {type(model).__name__} has no dropout module "
                f"({', '.join(kind.__name__ for kind in DROPOUT_TYPES)}); add dropout to the network, "
                "or use Ensemble or SingleModel"
            )

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        return [routine(seed=seed, dropout=self.probability)]

    def members(
        self, trained: Sequence[nn.Module] | None = None, *, n: int | None = None, seed: int = 0
    ) -> Iterator[nn.Module]:
        """``n`` members (default :attr:`default_members`) of the ``trained`` network, or of
        your model: copies sharing its weights, member ``k`` with the masks of :meth:`mask_seed`."""
        from uqeval_torch.eu.dropout_masks import dropout_layers

        network = (trained if trained is not None else self.models or [None])[0]
        n = self.default_members if n is None else n
        if network is None:
            raise UQEvalError("MCDropout: no network to sample (give a model, or the trained run)")
        if n < 1:
            raise UQEvalError(f"MC dropout needs at least 1 member, not {n}")
        if not dropout_layers(network):
            raise UQEvalError("MC dropout: the network has no dropout layer to sample (was it trained with dropout?)")
        return _thinned(self, network, n, seed)

    def mask_seed(self, seed: int, member: int, layer: int) -> int:
        """The seed of member ``member``'s mask in dropout layer number ``layer`` (module order)."""
        from uqeval_torch.members import mix_seeds

        return mix_seeds(seed, member, layer)


def _thinned(source: MCDropout, network: nn.Module, n: int, seed: int) -> Iterator[nn.Module]:
    from uqeval_torch.eu.dropout_masks import FixedMask, dropout_layers
    from uqeval_torch.members import shared_copy

    for member in range(n):
        thinned = shared_copy(network).eval()
        for index, layer in enumerate(dropout_layers(thinned)):
            layer.register_forward_hook(FixedMask(source.mask_seed(seed, member, index)))
        yield thinned
