"""Causal language models: next-token prediction, generation, perplexity."""

from __future__ import annotations

import math
from typing import Any

from kdstudio.core.tasks.base import OutputCheck, Preset, Task
from kdstudio.core.tasks.words import CROSS_TOKENIZER, HIDDEN, LABELS, LOGIT


class CausalLM(Task):
    name = "causal-lm"
    title = "Language model"
    answer_words = "next-word probabilities"
    truth_words = "real next words"
    description = ("Writes text by predicting the next word (causal-lm). The large-language-"
                   "model case: the student learns to continue text as the teacher does.")
    auto_class = "AutoModelForCausalLM"
    output = "logits"
    generative = True
    per_position_output = True
    packs = True
    compare_title = "Text generation"
    compare_hint = "Type the start of a text; the teacher and the student each continue it."
    compare_view = "continuation"
    generation_applies = True
    shows_token_view = True
    caches_teacher = True
    scores_vocabulary = True
    chunks_head = True
    trained_head_classes = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
    untrained_head_hint = (
        "Choose a causal language model as the teacher: the built-in 'everyday-gpt', a Hub "
        "model such as 'gpt2', or a folder saved from a *ForCausalLM model. A sentence encoder "
        "such as all-MiniLM-L6-v2 fits task = \"sentence-embedding\".")
    examples = ("The weather this weekend will be", "My favourite recipe starts with",
                "The train to the coast")
    demo_file = "causal-lm.toml"
    demo_intro = "a small GPT language model"
    demo_menu = "&Language model: distil a small GPT"
    demo_rank = 3
    headline_metric = ("perplexity", False)
    presets = (
        Preset("logit", "Imitate the teacher's probabilities",
               "Logit distillation: the simplest, and usually the best start.",
               LOGIT, {"logit_weight": 1.0}, {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("logit_labels", "Probabilities and the true next words",
               "Logit distillation mixed with the ordinary next-word loss.",
               LOGIT + "<br><br>" + LABELS, {"logit_weight": 1.0, "hard_label_weight": 0.5},
               {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("logit_hidden", "Probabilities and hidden layers",
               "Adds intermediate-layer distillation: more guidance for small students.",
               LOGIT + "<br><br>" + HIDDEN, {"logit_weight": 1.0, "hidden_weight": 1.0},
               {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("cross_tokenizer", "A teacher with a different vocabulary",
               "Cross-tokenizer distillation with the true next words.",
               CROSS_TOKENIZER + "<br><br>" + LABELS,
               {"cross_tokenizer_weight": 1.0, "hard_label_weight": 1.0},
               {"temperature": 1.0}),
    )
    own_method_fields = (("cross_tokenizer_weight", 0.0), ("sequence_level", False),
                         ("on_policy_share", 0.0))
    method_defaults = {"logit_weight": 1.0, "temperature": 1.0}
    default_teacher = "everyday-gpt"
    data_defaults = {"max_length": 128}

    def selection_figure(self) -> tuple[str, bool]:
        """Perplexity: averaged over every token, and measured with either tokenizer."""
        return ("perplexity", False)

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, want: frozenset[str] = frozenset(),
                         head_only: bool = False) -> dict[str, Any]:
        """Logits, or with head_only (and a plain linear head) the last hidden state and the
        head, so the logit terms can run chunk by chunk."""
        from kdstudio.core.tasks.base import body_features, logits_features, plain_head

        if head_only and plain_head(model) is not None:
            return body_features(model, inputs, want)
        return logits_features(model, inputs, want)

    def batch_maker(self, texts: list[str], labels: list[int] | None, *, student_tok: Any,
                    teacher_tok: Any, same_tok: bool, max_length: int, pack: bool, device: Any,
                    prompt_chars: list[int] | None = None, source: str = "the data"):
        """(number of training items, item indices -> Batch): packed blocks of token ids, or
        texts each model tokenizes its own way (different tokenizers, or prompts that are
        context only)."""
        from kdstudio.core.batch import causal_blocks, collate_blocks
        from kdstudio.core.errors import KDStudioError
        from kdstudio.core.batch import text_batch
        from kdstudio.core.batch import Batch

        if prompt_chars is not None or not same_tok:
            chars = prompt_chars or [0] * len(texts)
            t_tok = None if same_tok else teacher_tok
            return len(texts), lambda idx: text_batch(
                [texts[i] for i in idx], [chars[i] for i in idx], student_tok, t_tok, max_length,
                device)
        blocks = causal_blocks(student_tok, texts, max_length, pack)
        if not blocks:
            raise KDStudioError(f"After tokenizing, {source} gives no training sequences of two "
                                "or more tokens.")

        def make_blocks(idx: list[int]) -> Batch:
            b = collate_blocks([blocks[i] for i in idx], student_tok.pad_token_id)
            b = {k: v.to(device) for k, v in b.items()}
            return Batch(b, b, None, int(b["attention_mask"].sum()), len(idx), rows=list(idx))
        # The rows' token ids: what the teacher cache is keyed on and written for.
        make_blocks.cache_rows = blocks  # type: ignore[attr-defined]
        return len(blocks), make_blocks

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import Fit

        also = "sequence-level distillation (method.sequence_level)"
        if not same_vocab:
            return Fit(also_works=also)
        vocab = len(teacher_tok)
        notes = []
        rows_t = teacher.get_output_embeddings().weight.shape[0]
        rows_s = student.get_output_embeddings().weight.shape[0]
        if rows_t != rows_s or rows_t != vocab:
            notes.append(f"The models pad their vocabularies differently ({rows_t} and "
                         f"{rows_s} rows); logits are compared over the tokenizer's {vocab} "
                         "tokens.")
        return Fit(vocab, notes, also_works=also)

    def paired_logits(self, x: Any) -> tuple[Any, Any, Any]:
        """Each position's next-token logits, where a next token is trained."""
        s, _, mask = x.next_token()
        return s, x.teacher_next_token(), mask

    def labelled_logits(self, x: Any) -> tuple[Any, Any]:
        s, labels, _ = x.next_token()
        return s, labels

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.batch import causal_blocks, collate_blocks

        blocks = causal_blocks(tokenizer, eval_set.texts, eval_set.max_length, eval_set.pack)
        return [collate_blocks(blocks[i:i + eval_set.batch_size], tokenizer.pad_token_id)
                for i in range(0, len(blocks), eval_set.batch_size)]

    def latency_sample(self, eval_set: Any, tokenizer: Any) -> dict:
        """A full block: the longest the model reads."""
        from kdstudio.core.batch import causal_blocks, collate_blocks

        blocks = causal_blocks(tokenizer, eval_set.texts, eval_set.max_length, eval_set.pack)
        return collate_blocks([max(blocks, key=len)], tokenizer.pad_token_id)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        ppl, entropy = self._perplexity(ev, ev.teacher, ev.teacher_batches)
        return {"perplexity": ppl, "entropy": entropy}

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        if ev.student_batches is not ev.teacher_batches:
            # Different tokenizers: no shared ids to agree on, only the student's own figure
            # (and no entropy: entropies per token of different vocabularies do not compare).
            return {"perplexity": self._perplexity(ev, student, ev.student_batches)[0]}
        # A run that reads the teacher's cache measures against its cached answers there.
        answers = getattr(ev, "teacher_answers", None)
        if answers is None and _weightless(ev.teacher):
            # Rows with no cached answers (the validation rows) in a run whose teacher has no
            # weights: the student's own figure, which is what chooses the best student.
            return {"perplexity": self._perplexity(ev, student, ev.student_batches)[0]}

        def sums(b: dict) -> tuple[float, float, float, float, int]:
            st = (_cached_stats(answers, ev, student, b) if answers is not None
                  else _token_stats(ev, student, b, teacher=ev.teacher))
            return (float(st.student_nll.sum()), float(st.agree.sum()), float(st.kl.sum()),
                    float(st.entropy.sum()), st.count, st.per_row(st.student_nll, st.agree, st.kl))
        # Each batch's sums (gathered from the processes of a multi-process run), added in
        # batch order: the very figures of one process.
        nll, agree, kl, entropy, count = 0.0, 0.0, 0.0, 0.0, 0
        rows = []  # each block's parts of the figures, for their intervals
        for b_nll, b_agree, b_kl, b_entropy, b_count, b_rows in ev.each(ev.student_batches, sums):
            rows.append(b_rows)
            nll += b_nll
            agree += b_agree
            kl += b_kl
            entropy += b_entropy
            count += b_count
        _keep_rows(ev, rows, ("perplexity", "top1_agreement", "kl_to_teacher"))
        count = max(count, 1)
        return {"perplexity": math.exp(min(nll / count, 50.0)), "top1_agreement": agree / count,
                "kl_to_teacher": kl / count, "entropy": entropy / count}

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.generate(text, gen)

    # -- behaviour questions --------------------------------------------------------------------
    @property
    def head_words(self) -> str:
        return "language-model"

    def compare_verdict(self, teacher: Any, student: Any) -> str:
        same = teacher.text.strip() == student.text.strip()
        return (" and wrote the same continuation." if same
                else "; its continuation differs from the teacher's.")

    def export_kwargs(self) -> dict[str, Any]:
        """Without the KV cache the graph gives the logits only."""
        return {"use_cache": False}

    def export_batch_size(self, batch_size: int, model: Any, max_length: int,
                          max_bytes: int) -> int:
        """Logits are (batch x length x vocabulary): keep one batch's within max_bytes."""
        vocab = model.get_output_embeddings().weight.shape[0]
        return max(1, min(batch_size, max_bytes // (4 * vocab * max_length)))

    def output_check(self, labels: list[int] | None, vocab: int,
                     teacher_outputs: Any = None) -> "OutputCheck":
        return _PerplexityCheck(vocab)

    @staticmethod
    def _perplexity(ev: Any, model: Any, batches: list) -> tuple[float, float]:
        """The model's perplexity and the mean entropy of its next-token predictions (nats):
        a student far surer than its teacher is collapsing (the health watch compares them)."""
        def sums(b: dict) -> tuple[float, float, int]:
            st = _token_stats(ev, model, b)
            return (float(st.student_nll.sum()), float(st.entropy.sum()), st.count,
                    st.per_row(st.student_nll))
        nll, entropy, count = 0.0, 0.0, 0
        rows = []
        for b_nll, b_entropy, b_count, b_rows in ev.each(batches, sums):
            rows.append(b_rows)
            nll += b_nll
            entropy += b_entropy
            count += b_count
        _keep_rows(ev, rows, ("perplexity",))
        count = max(count, 1)
        return math.exp(min(nll / count, 50.0)), entropy / count


class _PerplexityCheck(OutputCheck):
    """Logits at every position: only real tokens count; perplexity over the tokenizer's
    entries, as the run measures it."""

    def __init__(self, vocab: int):
        self.vocab, self.nll_r, self.nll_c, self.count = vocab, 0.0, 0.0, 0

    def add(self, batch: dict, reference: Any, candidate: Any) -> float:
        import torch.nn.functional as F

        r, c = reference, candidate
        keep = batch["attention_mask"].bool()
        diff = (r - c).abs()[keep].max().item()
        lab = batch["labels"][:, 1:].flatten()
        v = min(self.vocab, r.shape[-1])
        self.nll_r += F.cross_entropy(r[:, :-1, :v].flatten(0, 1), lab, ignore_index=-100,
                                      reduction="sum").item()
        self.nll_c += F.cross_entropy(c[:, :-1, :v].flatten(0, 1), lab, ignore_index=-100,
                                      reduction="sum").item()
        self.count += int((lab != -100).sum())
        return diff

    def result(self) -> tuple[str, float, float, dict[str, float]]:
        def ppl(nll: float) -> float:
            return math.exp(min(nll / max(self.count, 1), 50.0))

        return "perplexity", ppl(self.nll_c), ppl(self.nll_r), {}


class _Stats:
    def __init__(self, stats: Any, count: int, row_of: Any = None, n_rows: int = 0):
        self.student_nll, self.agree, self.kl, self.entropy, self.count = (
            stats.student_nll, stats.agree, stats.kl, stats.student_entropy, count)
        # Which block (row of the batch) each kept position belongs to.
        self.row_of, self.n_rows = row_of, n_rows

    def per_row(self, *values: Any) -> Any:
        """(n_rows, 1 + len(values)) float64 on the CPU: each block's kept positions, then
        each value summed over them (the intervals are bootstrapped over blocks)."""
        import torch

        out = torch.zeros(self.n_rows, 1 + len(values), dtype=torch.float64)
        row_of = self.row_of.cpu()
        out[:, 0].index_add_(0, row_of, torch.ones(len(row_of), dtype=torch.float64))
        for i, v in enumerate(values, 1):
            out[:, i].index_add_(0, row_of, v.detach().double().cpu())
        return out


def _cached_stats(answers: Any, ev: Any, student: Any, batch: dict) -> _Stats:
    """The student against the teacher's cached answers (cached_teacher.CachedAnswers)."""
    st = answers.stats(ev, student, batch)
    return _Stats(st, st.count, st.row_of, st.n_rows)


def _keep_rows(ev: Any, rows: list[Any], names: tuple[str, ...]) -> None:
    """The figures' parts per block (intervals.py): perplexity from each block's loss and
    tokens, the shares from each block's counts over its tokens."""
    import torch

    from kdstudio.core.intervals import Ratio

    if rows:
        r = torch.cat(rows)
        ev.keep_rows({name: Ratio(r[:, i], r[:, 0], exp=name == "perplexity")
                      for i, name in enumerate(names, 1)})


def _weightless(model: Any) -> bool:
    """A teacher outline (cached_teacher.teacher_outline): shapes on the meta device only."""
    p = next(iter(model.parameters()), None) if model is not None else None
    return p is not None and p.device.type == "meta"


def _token_stats(ev: Any, model: Any, batch: dict, teacher: Any = None) -> _Stats:
    """Per-position NLL (and agreement and KL with the teacher) at the kept next-token
    positions, chunk by chunk over the head: a batch's full-vocabulary logits never exist
    when the heads are plain linear maps (else the logits of this batch are made once).
    A measurement: no autograd graph is kept, whoever calls it."""
    import torch

    with torch.no_grad():
        return _measure(ev, model, batch, teacher)


def _measure(ev: Any, model: Any, batch: dict, teacher: Any) -> _Stats:
    import torch

    from kdstudio.core.chunked_eval import chunked_token_logprobs
    from kdstudio.core.tasks.base import plain_head

    b = {k: t.to(ev.device) for k, t in batch.items()}
    inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    keep = b["labels"][:, 1:] != -100
    labels = b["labels"][:, 1:][keep]
    row_of = keep.nonzero(as_tuple=True)[0]
    v = ev.vocab_size or None

    models = [model] + ([teacher] if teacher is not None else [])
    if all(plain_head(m) is not None for m in models):
        rows = []
        for m in models:
            with ev.autocast():
                h = m.base_model(**inputs).last_hidden_state[:, :-1][keep]
            head = m.get_output_embeddings()
            rows.append((h, head.weight, head.bias))
        kw: dict[str, Any] = {}
        if teacher is not None:
            kw = dict(teacher_hidden=rows[1][0], teacher_weight=rows[1][1],
                      teacher_bias=rows[1][2])
        stats = chunked_token_logprobs(rows[0][0], rows[0][1], labels, student_bias=rows[0][2],
                                       vocab_size=v, **kw)
        return _Stats(stats, int(keep.sum()), row_of, keep.shape[0])
    # A head that is more than a linear map: this batch's logits, once.
    import torch.nn.functional as F

    with ev.autocast():
        logits = [m(**inputs).logits[:, :-1, :v][keep].float() for m in models]
    s_nll = F.cross_entropy(logits[0], labels, reduction="none")
    logp_s = F.log_softmax(logits[0], -1)
    entropy = -torch.where(logp_s.exp() > 0, logp_s.exp() * logp_s, 0.0).sum(-1)
    agree = kl = None
    if teacher is not None:
        agree = logits[0].argmax(-1) == logits[1].argmax(-1)
        logp_t = F.log_softmax(logits[1], -1)
        kl = torch.where(logp_t.exp() > 0, logp_t.exp() * (logp_t - logp_s), 0.0).sum(-1)
    return _Stats(type("S", (), {"student_nll": s_nll, "agree": agree, "kl": kl,
                                 "student_entropy": entropy})(), int(keep.sum()), row_of,
                  keep.shape[0])
