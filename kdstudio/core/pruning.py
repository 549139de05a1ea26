"""Cut a teacher to a smaller student: importance of its parts, then a pruned copy.

Following NVIDIA's Minitron (Muralidharan et al., 2024): attention heads, MLP neurons and
embedding channels are ranked by the size of their activations on a calibration sample;
layers by ShortGPT's block influence (Men et al., 2024), 1 - cos(layer input, layer output).
The pruned copy keeps the most important parts, with every layer the same shape, so its
config is an ordinary transformers config that loads anywhere.

Pure model surgery and arithmetic: no files, no runs (student_prep.py keeps importance on
disk and builds a run's student; importance.py measures, prune_plan.py plans a target size).
Architectures: BERT family (BERT, MiniLM, RoBERTa, ...),
GPT-2 (Conv1D, fused c_attn), Llama family (Llama, Qwen2, Mistral; grouped-query attention
keeps whole key/value groups with their query heads).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdstudio.core.config import LAYER_CHOICES, SHAPES, VOCABULARIES  # noqa: F401
from kdstudio.core.errors import ConfigError, ModelError

# -- architectures --------------------------------------------------------------------------
# Each family names its config keys and, per parameter, what each dimension indexes:
# C hidden channels, V vocabulary, A query-head dims, K key/value-head dims, F MLP neurons,
# Q fused q|k|v dims (GPT-2's c_attn), "-" a dimension that never changes.

_BERT_RULES = [
    (r"word_embeddings\.weight$", "VC"),
    (r"(position|token_type)_embeddings\.weight$", "-C"),
    (r"LayerNorm\.(weight|bias)$", "C"),
    (r"attention\.self\.(query|key|value)\.weight$", "AC"),
    (r"attention\.self\.(query|key|value)\.bias$", "A"),
    (r"attention\.output\.dense\.weight$", "CA"),
    (r"attention\.output\.dense\.bias$", "C"),
    (r"intermediate\.dense\.weight$", "FC"),
    (r"intermediate\.dense\.bias$", "F"),
    (r"output\.dense\.weight$", "CF"),
    (r"output\.dense\.bias$", "C"),
    (r"pooler\.dense\.weight$", "CC"),
    (r"pooler\.dense\.bias$", "C"),
    (r"classifier\.dense\.weight$", "CC"),
    (r"classifier\.dense\.bias$", "C"),
    (r"classifier(\.out_proj)?\.weight$", "-C"),
    (r"classifier(\.out_proj)?\.bias$", "-"),
]
_GPT2_RULES = [
    (r"wte\.weight$", "VC"),
    (r"wpe\.weight$", "-C"),
    (r"ln_(1|2|f)\.(weight|bias)$", "C"),
    (r"attn\.c_attn\.weight$", "CQ"),
    (r"attn\.c_attn\.bias$", "Q"),
    (r"attn\.c_proj\.weight$", "AC"),
    (r"attn\.c_proj\.bias$", "C"),
    (r"mlp\.c_fc\.weight$", "CF"),
    (r"mlp\.c_fc\.bias$", "F"),
    (r"mlp\.c_proj\.weight$", "FC"),
    (r"mlp\.c_proj\.bias$", "C"),
    (r"lm_head\.weight$", "VC"),
    (r"score\.weight$", "-C"),
]
_LLAMA_RULES = [
    (r"embed_tokens\.weight$", "VC"),
    (r"lm_head\.weight$", "VC"),
    (r"(norm|input_layernorm|post_attention_layernorm)\.weight$", "C"),
    (r"q_proj\.weight$", "AC"),
    (r"q_proj\.bias$", "A"),
    (r"(k_proj|v_proj)\.weight$", "KC"),
    (r"(k_proj|v_proj)\.bias$", "K"),
    (r"o_proj\.weight$", "CA"),
    (r"o_proj\.bias$", "C"),
    (r"(gate_proj|up_proj)\.weight$", "FC"),
    (r"down_proj\.weight$", "CF"),
    (r"score\.weight$", "-C"),
    (r"(q_norm|k_norm)\.weight$", "-"),
]


@dataclass(frozen=True)
class Family:
    name: str
    hidden: str
    heads: str
    inter: str
    layers: str
    rules: list
    kv_heads: str = ""          # grouped-query attention: key/value heads
    head_dim_free: bool = False  # head_dim is its own config key (hidden need not be heads x dim)
    out_proj: str = ""          # the attention output projection (its input is the heads' output)
    down_proj: str = ""         # the MLP's output projection (its input is the neurons' activation)
    encoder: bool = False


FAMILIES = {
    "bert": Family("BERT family", "hidden_size", "num_attention_heads", "intermediate_size",
                   "num_hidden_layers", _BERT_RULES, out_proj="attention.output.dense",
                   down_proj="output.dense", encoder=True),
    "gpt2": Family("GPT-2", "n_embd", "n_head", "n_inner", "n_layer", _GPT2_RULES,
                   out_proj="attn.c_proj", down_proj="mlp.c_proj"),
    "llama": Family("Llama family", "hidden_size", "num_attention_heads", "intermediate_size",
                    "num_hidden_layers", _LLAMA_RULES, kv_heads="num_key_value_heads",
                    head_dim_free=True, out_proj="self_attn.o_proj", down_proj="mlp.down_proj"),
}
_MODEL_TYPES = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert",
    "electra": "bert",
    "gpt2": "gpt2",
    "llama": "llama", "qwen2": "llama", "mistral": "llama", "qwen3": "llama",
}


def family_of(config: Any) -> Family | None:
    """The pruning family of a model's config, or None when it cannot be pruned here."""
    key = _MODEL_TYPES.get(getattr(config, "model_type", ""))
    return FAMILIES[key] if key else None


def require_family(config: Any, what: str = "Pruning") -> Family:
    fam = family_of(config)
    if fam is None:
        raise ConfigError(f"{what} needs a teacher of a family KD Studio can prune; this one is "
                          f"'{getattr(config, 'model_type', '?')}'.",
                          hint="Families: BERT (BERT, MiniLM, RoBERTa), GPT-2, Llama (Llama, "
                               "Qwen2, Mistral). Or keep the teacher's width "
                               "(student.hidden_size = 0, attention_heads = 0, "
                               "intermediate_size = 0) and layer_choice = 'even'.")
    return fam


@dataclass(frozen=True)
class Dims:
    """A model's prunable sizes."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    vocab: int


def dims_of(config: Any) -> Dims:
    fam = require_family(config)
    hidden = getattr(config, fam.hidden)
    heads = getattr(config, fam.heads)
    inter = getattr(config, fam.inter, None) or 4 * hidden  # GPT-2's n_inner None means 4 x
    head_dim = getattr(config, "head_dim", None) if fam.head_dim_free else None
    head_dim = head_dim or hidden // heads
    kv = (getattr(config, fam.kv_heads, None) or heads) if fam.kv_heads else heads
    return Dims(getattr(config, fam.layers), hidden, heads, kv, head_dim, inter, config.vocab_size)


# -- the shape asked for --------------------------------------------------------------------

@dataclass(frozen=True)
class PruneShape:
    """The student's sizes; 0 keeps the teacher's."""

    layers: list[int]            # kept teacher layers, in order
    heads: int = 0
    inter: int = 0
    hidden: int = 0

    def resolved(self, d: Dims, fam: Family) -> tuple[int, int, int]:
        """(heads, hidden, inter) with the teacher's sizes filled in; tied families (hidden =
        heads x head dim) take the one from the other."""
        heads, hidden = self.heads, self.hidden
        if not fam.head_dim_free:
            if heads and not hidden:
                hidden = heads * d.head_dim
            elif hidden and not heads:
                heads = hidden // d.head_dim
        return heads or d.heads, hidden or d.hidden, self.inter or d.inter


def check_shape(config: Any, *, heads: int = 0, hidden: int = 0, inter: int = 0) -> None:
    """ConfigError, naming the field and the allowed values, for a shape this teacher cannot take."""
    if not (heads or hidden or inter):
        return
    fam = require_family(config, "A narrower student initialised from the teacher")
    d = dims_of(config)
    if heads and heads > d.heads:
        raise ConfigError(f"student.attention_heads is {heads}, but the teacher has only "
                          f"{d.heads} attention heads.",
                          hint=f"Choose 1 to {d.heads} (0 keeps the teacher's {d.heads}).")
    if heads and fam.kv_heads and d.kv_heads != d.heads:
        per = d.heads // d.kv_heads
        if heads % per:
            ok = ", ".join(str(per * g) for g in range(1, d.kv_heads + 1))
            raise ConfigError(f"student.attention_heads is {heads}; the teacher shares each "
                              f"key/value head among {per} query heads, and whole groups are "
                              "kept.", hint=f"Choose one of {ok}.")
    if hidden and hidden > d.hidden:
        raise ConfigError(f"student.hidden_size is {hidden}, wider than the teacher's {d.hidden}.",
                          hint=f"Choose up to {d.hidden} (0 keeps the teacher's).")
    if inter and inter > d.inter:
        raise ConfigError(f"student.intermediate_size is {inter}, more than the teacher's "
                          f"{d.inter} MLP neurons.",
                          hint=f"Choose 1 to {d.inter} (0 keeps the teacher's).")
    if not fam.head_dim_free:
        ok = ", ".join(str(d.head_dim * i) for i in range(1, d.heads + 1))
        if hidden and hidden % d.head_dim:
            raise ConfigError(f"student.hidden_size is {hidden}; in a {fam.name} model the width "
                              f"is the attention heads times the head size {d.head_dim}, so it "
                              f"must divide into heads of {d.head_dim}.",
                              hint=f"Valid widths: {ok}.")
        if hidden and heads and hidden != heads * d.head_dim:
            raise ConfigError(f"student.hidden_size {hidden} and student.attention_heads {heads} "
                              f"do not fit: a {fam.name} model's width is its heads times the "
                              f"head size {d.head_dim} ({heads} heads: width "
                              f"{heads * d.head_dim}).",
                              hint="Give one of the two (0 for the other), or a matching pair.")


def uses_pruning(s: Any, config: Any = None) -> bool:
    """Whether a StudentConfig asks for a pruned student (else: today's layer-dropping one).
    A narrower hidden_size alone is pruned where the family allows (``config``), else fresh."""
    if s.name:
        return False
    if (s.layer_choice != "even" or s.attention_heads or s.intermediate_size or s.target_size
            or s.vocabulary != "teacher"):
        return True
    return bool(s.hidden_size) and (config is None or family_of(config) is not None)


def check_student_fields(s: Any, config: Any) -> None:
    """Refuse a pruned student this teacher cannot give, from its config alone (a transformers
    config or config.json's dict): the family, the shape, the vocabulary cut."""
    if isinstance(config, dict):
        from types import SimpleNamespace

        config = SimpleNamespace(**config)
    if s.name or not uses_pruning(s, config):
        return
    fam = require_family(config, "A pruned student")
    if getattr(config, fam.hidden, None) is None or getattr(config, fam.heads, None) is None:
        return  # an unusual config.json: the run itself will say what it lacks
    if s.vocabulary == "data" and not fam.encoder:
        raise ConfigError(f"student.vocabulary is 'data', but the teacher is a {fam.name} "
                          "model; only encoder (BERT-family) vocabularies are cut to the data.",
                          hint="Set student.vocabulary = \"teacher\" (allowed: teacher, data).")
    if s.vocabulary == "data" and getattr(config, "model_type", "") not in ("bert", "electra"):
        raise ConfigError(f"student.vocabulary is 'data', but the teacher is a "
                          f"'{config.model_type}' model, whose tokenizer is not WordPiece; only "
                          "WordPiece vocabularies (BERT, MiniLM, ELECTRA) are cut to the data.",
                          hint="Set student.vocabulary = \"teacher\" (allowed: teacher, data).")
    check_shape(config, heads=s.attention_heads, hidden=s.hidden_size, inter=s.intermediate_size)


def pruned_config(config: Any, shape: PruneShape, vocab_rows: int = 0) -> Any:
    """The teacher's config with the pruned sizes: an ordinary transformers config."""
    fam = require_family(config)
    d = dims_of(config)
    heads, hidden, inter = shape.resolved(d, fam)
    cfg = copy.deepcopy(config)
    setattr(cfg, fam.hidden, hidden)
    setattr(cfg, fam.heads, heads)
    setattr(cfg, fam.inter, inter)
    setattr(cfg, fam.layers, len(shape.layers))
    if fam.kv_heads:
        setattr(cfg, fam.kv_heads, max(1, heads * d.kv_heads // d.heads))
    if fam.head_dim_free:
        cfg.head_dim = d.head_dim
    lt = getattr(cfg, "layer_types", None)
    if isinstance(lt, list) and len(lt) == d.layers:
        cfg.layer_types = [lt[i] for i in shape.layers]
    if vocab_rows:
        cfg.vocab_size = vocab_rows
    return cfg


def meta_params(model_cls: Any, config: Any) -> int:
    """Parameters of a model of this config, counted on the meta device (no memory)."""
    with torch.device("meta"):
        # An Auto class builds from a config; a model class is called with one.
        m = model_cls.from_config(config) if hasattr(model_cls, "from_config") and \
            model_cls.__name__.startswith("Auto") else model_cls(config)
    seen = set()
    total = 0
    for p in m.parameters():  # tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def layer_list(model: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    """The dotted name and the ModuleList of the transformer blocks."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers:
            size = sum(p.numel() for p in mod.parameters())
            if best is None or size > best[0]:
                best = (size, name, mod)
    if best is None:
        raise ModelError(f"Could not find the transformer layers of {type(model).__name__}.")
    return best[1], best[2]


# -- surgery --------------------------------------------------------------------------------

def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in their original order (ties: the lower index)."""
    if k >= scores.numel():
        return torch.arange(scores.numel())
    order = torch.argsort(-scores.double() + torch.arange(scores.numel()) * 1e-12)
    return order[:k].sort().values


def _dims_for(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Dimension indices of whole heads: head i covers i*width .. (i+1)*width - 1."""
    return (idx[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def prune_model(model: nn.Module, shape: PruneShape, importance: Any, *,
                token_ids: list[int] | None = None) -> nn.Module:
    """A new model of the teacher's class keeping the shape's layers and its most important
    heads, neurons and channels (by ``importance``; without it, the first ones), and only
    ``token_ids`` of the vocabulary when given (rows in that order). Float32 weights."""
    fam = require_family(model.config)
    d = dims_of(model.config)
    heads, hidden, inter = shape.resolved(d, fam)
    check_shape(model.config, heads=heads if heads != d.heads else 0,
                hidden=hidden if hidden != d.hidden else 0, inter=inter if inter != d.inter else 0)
    cfg = pruned_config(model.config, shape, len(token_ids) if token_ids else 0)
    imp = importance
    ch = _top(imp.channels, hidden) if imp is not None else torch.arange(hidden)
    per_group = d.heads // d.kv_heads
    kv_keep = max(1, heads // per_group) if fam.kv_heads else heads
    index: dict[int, dict[str, torch.Tensor]] = {}
    for new_i, old_i in enumerate(shape.layers):
        if fam.kv_heads and per_group > 1:
            hs = imp.heads[old_i] if imp is not None else -torch.arange(d.heads).float()
            groups = _top(hs.reshape(d.kv_heads, per_group).sum(-1), kv_keep)
            qh = _dims_for(groups, per_group)  # a group's query heads come with it
        else:
            hs = imp.heads[old_i] if imp is not None else -torch.arange(d.heads).float()
            groups = qh = _top(hs, heads)
        a = _dims_for(qh, d.head_dim)
        k = _dims_for(groups, d.head_dim)
        f = _top(imp.neurons[old_i], inter) if imp is not None else torch.arange(inter)
        q = torch.cat([a, a + d.heads * d.head_dim, a + 2 * d.heads * d.head_dim])
        index[old_i] = {"A": a, "K": k, "F": f, "Q": q}
    vocab = torch.tensor(token_ids) if token_ids else None
    student = type(model)(cfg)  # its random weights are all replaced below
    prefix, _ = layer_list(model, d.layers)
    src = dict(model.state_dict())
    new_state = {}
    layer_re = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    for name, target in student.state_dict().items():
        m = layer_re.match(name)
        old_i = shape.layers[int(m.group(1))] if m else None
        old_name = layer_re.sub(f"{prefix}.{old_i}.", name) if m else name
        t = src[old_name]
        roles = next((r for pat, r in fam.rules if re.search(pat, name)), None)
        if roles is not None and len(roles) == t.dim():
            for dim, role in enumerate(roles):
                if role == "-":
                    continue
                if role == "C":
                    sel = ch
                elif role == "V":
                    sel = vocab
                else:
                    sel = index[old_i][role] if old_i is not None else None
                if sel is not None and (t.shape[dim] != sel.numel() or role in "CV"):
                    t = t.index_select(dim, sel.to(t.device))
        if tuple(t.shape) != tuple(target.shape):
            raise ModelError(f"Pruning {type(model).__name__}: the weight '{name}' would be "
                             f"{tuple(t.shape)}, but the student needs {tuple(target.shape)}.",
                             hint="This architecture's layout is not one KD Studio knows.")
        new_state[name] = t.detach().to(torch.float32 if t.is_floating_point() else t.dtype).clone()
    student.load_state_dict(new_state)
    if vocab is not None:
        _remap_special_ids(student.config, token_ids)
    student.float()
    student.requires_grad_(True)
    if hidden != d.hidden:  # which teacher channels it kept (the distiller's projections use it)
        student.pruned_channels = ch.tolist()
    return student


def _remap_special_ids(cfg: Any, token_ids: list[int]) -> None:
    new = {old: i for i, old in enumerate(token_ids)}
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
                "cls_token_id", "decoder_start_token_id"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v in new:
            setattr(cfg, key, new[v])
