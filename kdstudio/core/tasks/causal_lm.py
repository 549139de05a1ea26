"""Causal language models: next-token prediction, generation, perplexity."""

from __future__ import annotations

import math
from typing import Any

from kdstudio.core.tasks.base import Task


class CausalLM(Task):
    name = "causal-lm"
    title = "Language model"
    description = ("Writes text by predicting the next word (causal-lm). The large-language-"
                   "model case: the student learns to continue text as the teacher does.")
    auto_class = "AutoModelForCausalLM"
    output = "logits"
    generative = True
    packs = True
    compare_title = "Text generation"
    compare_hint = "Type the start of a text; the teacher and the student each continue it."
    examples = ("The weather this weekend will be", "My favourite recipe starts with",
                "The train to the coast")
    demo_file = "causal-lm.toml"
    demo_intro = "a small GPT language model"
    demo_menu = "&Language model: distil a small GPT"
    demo_rank = 3
    headline_metric = ("perplexity", False)
    own_method_fields = (("cross_tokenizer_weight", 0.0), ("sequence_level", False),
                         ("on_policy_share", 0.0))
    method_defaults = {"logit_weight": 1.0, "temperature": 1.0}
    data_defaults = {"max_length": 128}

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, hidden: bool = False) -> dict[str, Any]:
        from kdstudio.core.tasks.base import logits_features

        return logits_features(model, inputs, hidden)

    def batch_maker(self, texts: list[str], labels: list[int] | None, *, student_tok: Any,
                    teacher_tok: Any, same_tok: bool, max_length: int, pack: bool, device: Any,
                    prompt_chars: list[int] | None = None, source: str = "the data"):
        """(number of training items, item indices -> Batch): packed blocks of token ids, or
        texts each model tokenizes its own way (different tokenizers, or prompts that are
        context only)."""
        from kdstudio.core.data import causal_blocks, collate_blocks
        from kdstudio.core.errors import KDStudioError
        from kdstudio.core.lm import text_batch
        from kdstudio.core.objective import Batch

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
            return Batch(b, b, None, int(b["attention_mask"].sum()), len(idx))
        return len(blocks), make_blocks

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import Fit

        also = "sequence-level distillation (method.sequence_level)"
        if not same_vocab:
            return Fit(["hard_label", "cross_tokenizer"], also_works=also)
        vocab = len(teacher_tok)
        notes = []
        rows_t = teacher.get_output_embeddings().weight.shape[0]
        rows_s = student.get_output_embeddings().weight.shape[0]
        if rows_t != rows_s or rows_t != vocab:
            notes.append(f"The models pad their vocabularies differently ({rows_t} and "
                         f"{rows_s} rows); logits are compared over the tokenizer's {vocab} "
                         "tokens.")
        return Fit(["logit", "hard_label", "hidden", "cross_tokenizer"], vocab, notes,
                   also_works=also)

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.data import causal_blocks, collate_blocks

        blocks = causal_blocks(tokenizer, eval_set.texts, eval_set.max_length, eval_set.pack)
        return [collate_blocks(blocks[i:i + eval_set.batch_size], tokenizer.pad_token_id)
                for i in range(0, len(blocks), eval_set.batch_size)]

    def latency_sample(self, eval_set: Any, tokenizer: Any) -> dict:
        """A full block: the longest the model reads."""
        from kdstudio.core.data import causal_blocks, collate_blocks

        blocks = causal_blocks(tokenizer, eval_set.texts, eval_set.max_length, eval_set.pack)
        return collate_blocks([max(blocks, key=len)], tokenizer.pad_token_id)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        return {"perplexity": self._perplexity(ev, ev.teacher, ev.teacher_batches)}

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        import torch.nn.functional as F

        from kdstudio.core.losses import logit_distillation_loss

        if ev.student_batches is not ev.teacher_batches:
            # Different tokenizers: no shared ids to agree on, only the student's own figure.
            return {"perplexity": self._perplexity(ev, student, ev.student_batches)}
        nll, agree, kl, count = 0.0, 0.0, 0.0, 0
        v = ev.vocab_size or None
        for b in ev.student_batches:
            b = {k: t.to(ev.device) for k, t in b.items()}
            with ev.autocast():
                s = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                t = ev.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            s, t = s[:, :-1, :v].float(), t[:, :-1, :v].float()
            lab = b["labels"][:, 1:]
            mask = lab != -100
            n = int(mask.sum())
            nll += F.cross_entropy(s.flatten(0, 1), lab.flatten(), ignore_index=-100,
                                   reduction="sum").item()
            agree += ((s.argmax(-1) == t.argmax(-1)) & mask).sum().item()
            kl += logit_distillation_loss(s, t, mask=mask).item() * n
            count += n
        count = max(count, 1)
        return {"perplexity": math.exp(min(nll / count, 50.0)), "top1_agreement": agree / count,
                "kl_to_teacher": kl / count}

    @staticmethod
    def _perplexity(ev: Any, model: Any, batches: list) -> float:
        import torch.nn.functional as F

        nll, count = 0.0, 0
        for b in batches:
            b = {k: t.to(ev.device) for k, t in b.items()}
            with ev.autocast():
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lab = b["labels"][:, 1:]
            nll += F.cross_entropy(logits[:, :-1].float().flatten(0, 1), lab.flatten(),
                                   ignore_index=-100, reduction="sum").item()
            count += int((lab != -100).sum())
        return math.exp(min(nll / max(count, 1), 50.0))

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.generate(text, gen)
