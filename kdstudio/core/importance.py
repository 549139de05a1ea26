"""Which parts of a teacher matter: activation importance on a calibration sample.

Minitron's estimators (heads, MLP neurons, embedding channels from their activations) and
ShortGPT's block influence for layers, from one forward pass with hooks; pruning.py cuts by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from kdstudio.core.errors import StoppedError
from kdstudio.core.pruning import dims_of, layer_list, require_family

@dataclass
class Importance:
    """Per layer: heads [H] (query heads), neurons [I]; channels [C]; layers [L] (block
    influence); token_ids: the vocabulary the calibration texts use; n_tokens measured."""

    heads: torch.Tensor
    neurons: torch.Tensor
    channels: torch.Tensor
    layers: torch.Tensor
    n_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"heads": self.heads, "neurons": self.neurons, "channels": self.channels,
                "layers": self.layers, "n_tokens": torch.tensor(self.n_tokens),
                "token_ids": torch.tensor(self.token_ids, dtype=torch.long)}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> Importance:
        return cls(d["heads"], d["neurons"], d["channels"], d["layers"], int(d["n_tokens"]),
                   [int(i) for i in d["token_ids"].tolist()])


def _sub(block: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        block = getattr(block, part)
    return block


def measure_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]], *,
                       on_batch: Callable[[int, int], None] | None = None,
                       stop: Any = None) -> Importance:
    """Activation importance of the model's heads, neurons, channels and layers.

    ``batches``: tokenized inputs (input_ids, attention_mask) on the model's device. Head:
    the mean L2 norm of its output before the output projection; neuron: the mean |activation|
    entering the MLP's output projection; channel: the mean |output| of every LayerNorm /
    RMSNorm, summed; layer: 1 - the mean cosine of the block's input and output (ShortGPT).
    Means are over real tokens only (padding masked out).
    """
    fam = require_family(model.config, "The importance pass")
    d = dims_of(model.config)
    _, blocks = layer_list(model, d.layers)
    dev = next(model.parameters()).device
    heads = torch.zeros(d.layers, d.heads, dtype=torch.float64)
    neurons = torch.zeros(d.layers, d.inter, dtype=torch.float64)
    channels = torch.zeros(d.hidden, dtype=torch.float64)
    influence = torch.zeros(d.layers, dtype=torch.float64)
    state: dict[str, Any] = {"mask": None, "inputs": {}}
    count = [0]

    def masked_mean(x: torch.Tensor) -> torch.Tensor:  # x [B, T, ...] -> [...]
        m = state["mask"].to(x.dtype)
        m = m.reshape(m.shape + (1,) * (x.dim() - 2))
        return (x * m).sum(dim=(0, 1)).double().cpu()

    hooks = []
    for li, block in enumerate(blocks):
        def head_hook(_m, args, li=li):
            x = args[0].float()
            per = x.reshape(*x.shape[:2], d.heads, d.head_dim).norm(dim=-1)
            heads[li] += masked_mean(per)

        def neuron_hook(_m, args, li=li):
            neurons[li] += masked_mean(args[0].float().abs())

        def block_in(_m, args, kwargs, li=li):
            h = args[0] if args else kwargs.get("hidden_states")
            state["inputs"][li] = h.detach()

        def block_out(_m, _args, out, li=li):
            h_out = out[0] if isinstance(out, (tuple, list)) else out
            cos = nn.functional.cosine_similarity(state["inputs"].pop(li).float(),
                                                  h_out.float(), dim=-1)
            influence[li] += masked_mean((1 - cos).unsqueeze(-1)).squeeze(-1)

        hooks.append(_sub(block, fam.out_proj).register_forward_pre_hook(head_hook))
        hooks.append(_sub(block, fam.down_proj).register_forward_pre_hook(neuron_hook))
        hooks.append(block.register_forward_pre_hook(block_in, with_kwargs=True))
        hooks.append(block.register_forward_hook(block_out))
    def norm_hook(_m, _args, out):  # returns None: a hook's return value replaces the output
        channels.add_(masked_mean(out.float().abs()))

    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if "norm" in type(mod).__name__.lower() and isinstance(w, torch.Tensor) \
                and w.dim() == 1 and w.shape[0] == d.hidden:
            hooks.append(mod.register_forward_hook(norm_hook))
    used: set[int] = set()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if stop is not None and stop.is_set():
                    raise StoppedError("Stopped while measuring the teacher's importance; "
                                       "nothing was saved.")
                mask = batch["attention_mask"].to(dev)
                state["mask"] = mask
                count[0] += int(mask.sum())
                used.update(batch["input_ids"][batch["attention_mask"].bool()].tolist())
                model(input_ids=batch["input_ids"].to(dev), attention_mask=mask)
                if on_batch is not None:
                    on_batch(i + 1, len(batches))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = max(1, count[0])
    return Importance(heads=(heads / n).float(), neurons=(neurons / n).float(),
                      channels=(channels / n).float(), layers=(influence / n).float(),
                      n_tokens=count[0], token_ids=sorted(used))

