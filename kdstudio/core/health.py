"""Run health: a watch over a run's events that says, in plain words, when something goes wrong.

It reads the same events every sink sees (Step, Eval, Finished) and answers with Health
events, each naming what it saw, what to change and the setting that changes it. It knows
nothing of models or tensors, so the same watch serves a live run, a run's recorded
metrics.jsonl and the tests. The alarms (each raised once per run):

  nan_loss            a loss that is not a number: the run must stop (the trainer keeps the
                      last good checkpoint and never saves the broken weights)
  loss_rising         the training loss rose over three evaluation intervals in a row
  unbalanced          a loss term contributes under 1% of another (the KD loss 100-1,000x
                      smaller than the label loss: the student ignores the teacher)
  quality_falling     the headline figure peaked and fell on the last two evaluations
  repetition          a language model's answers to the pinned prompts repeat themselves
  entropy_collapse    a language model's predictions became far surer than the teacher's
  embedding_collapse  a sentence encoder's vectors became nearly all alike
  worse_than_plain    the distilled student ended worse than the same student trained
                      without the teacher (when the baseline runs)
  not_learning        a third of the steps done, the loss has not moved and neither has
                      the headline figure
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kdstudio.core.events import Eval, Event, Finished, Health, Step
from kdstudio.core.metrics import PERCENT_METRICS

# Each alarm and the setting its advice names (the Train page's button opens it).
ALARMS = {
    "nan_loss": "training.learning_rate",
    "loss_rising": "training.learning_rate",
    "unbalanced": "method.balance",
    "quality_falling": "training.max_steps",
    "repetition": "method.hard_label_weight",
    "entropy_collapse": "method.logit_loss",
    "embedding_collapse": "method.similarity_weight",
    "worse_than_plain": "method.hard_label_weight",
    "not_learning": "training.learning_rate",
}

# How far a figure must move before the watch calls it a change: evaluation figures on a
# few hundred texts move by about a point between evaluations on their own.
_RELATIVE_NOISE = 0.01
_UNBALANCED_SHARE = 0.01
# A loss that moved less than this share between the first and the latest evaluation
# interval has not moved (different batches alone move an interval's mean by a few percent).
_STUCK = 0.05


@dataclass
class TermInfo:
    name: str
    weight: float
    weight_key: str
    label: str


def repeated_share(text: str, n: int = 3) -> float:
    """The share of a text's word n-grams that appeared before in it (0: none repeated;
    close to 1: the text loops). Texts shorter than 2n words give 0."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < n + 1:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


class HealthWatch:
    """Feed it every event of a run (``watch(event)``); it returns the Health events to
    report. ``stopping`` is set once an alarm means the run must stop."""

    def __init__(self, *, headline: tuple[str, bool], terms: list[TermInfo], total_steps: int,
                 eval_samples: int = 0):
        self.headline, self.higher = headline
        # A share (accuracy, agreement) measured on this many evaluation texts moves by its
        # own sampling noise between two evaluations; 0: unknown.
        self.eval_samples = eval_samples
        self.terms = {t.name: t for t in terms}
        self.total_steps = max(1, total_steps)
        self.raised: dict[str, Health] = {}
        self.stopping: Health | None = None
        self._losses: list[float] = []           # total loss of each step since the last eval
        self._intervals: list[float] = []        # mean total loss of each eval interval
        self._first_losses: list[float] = []     # the first steps' totals
        self._terms: dict[str, list[float]] = {}  # each term's weighted size, first steps
        self._quality: list[tuple[int, float]] = []
        self._teacher: dict[str, float] = {}

    # -- the events ------------------------------------------------------------------------------
    def __call__(self, event: Event) -> list[Health]:
        if isinstance(event, Step):
            return self._step(event)
        if isinstance(event, Eval):
            return self._eval(event)
        if isinstance(event, Finished):
            return self._finished(event)
        return []

    def _raise(self, alarm: str, step: int, message: str, advice: str,
               level: str = "warning") -> list[Health]:
        if alarm in self.raised:
            return []
        h = Health(alarm=alarm, step=step, message=message, advice=advice,
                   setting=ALARMS[alarm], level=level)
        self.raised[alarm] = h
        if level == "error" and self.stopping is None:
            self.stopping = h
        return [h]

    def _step(self, e: Step) -> list[Health]:
        out: list[Health] = []
        total = e.losses.get("total", float("nan"))
        bad = [k for k, v in e.losses.items() if not math.isfinite(v)]
        if bad:
            names = ", ".join(self.terms[k].label if k in self.terms else k for k in bad)
            return self._raise(
                "nan_loss", e.step,
                f"At step {e.step} the loss became a number the computer cannot use "
                f"(not a number or infinite: {names}). Training cannot recover from this, so "
                "the run stops; the last good checkpoint is kept.",
                "Lower the learning rate (for example to a third), or use fp32 precision "
                "if half precision overflowed.", level="error")
        self._losses.append(total)
        if len(self._first_losses) < self._early_steps():
            self._first_losses.append(total)
            for name, term in self.terms.items():
                if name in e.losses and term.weight > 0:
                    self._terms.setdefault(name, []).append(abs(e.losses[name]) * term.weight)
            if len(self._first_losses) == self._early_steps():
                out += self._balance(e.step)
        return out

    def _early_steps(self) -> int:
        return max(1, min(20, self.total_steps // 5))

    def _balance(self, step: int) -> list[Health]:
        sizes = {k: sum(v) / len(v) for k, v in self._terms.items() if v}
        if len(sizes) < 2:
            return []
        small = min(sizes, key=sizes.get)
        big = max(sizes, key=sizes.get)
        if sizes[big] <= 0 or sizes[small] >= _UNBALANCED_SHARE * sizes[big]:
            return []
        s, b = self.terms[small], self.terms[big]
        ratio = sizes[big] / max(sizes[small], 1e-30)
        return self._raise(
            "unbalanced", step,
            f"The loss terms are out of balance: {b.label} is about {ratio:,.0f} times "
            f"larger than {s.label}, so {s.label} has almost no say in what the student "
            "learns.",
            f"Let KD Studio balance the terms (automatic balance of the losses), or give "
            f"{s.label} about {ratio / 10:,.0f} times its weight.")

    def _eval(self, e: Eval) -> list[Health]:
        out: list[Health] = []
        if e.teacher_metrics:
            self._teacher = dict(e.teacher_metrics)
        if self._losses:
            self._intervals.append(sum(self._losses) / len(self._losses))
            self._losses = []
        value = e.metrics.get(self.headline)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._quality.append((e.step, float(value)))
        if e.step > 0:
            out += self._rising(e.step) + self._falling(e.step) + self._collapse(e)
            out += self._stuck(e.step)
        return out

    def _better(self, a: float, b: float) -> bool:
        """a is better than b by more than the noise: for a share measured on n texts, the
        95% interval of the difference of two such shares (1.96 * sqrt(2 p (1 - p) / n));
        otherwise 1%."""
        margin = _RELATIVE_NOISE * max(abs(a), abs(b), 1e-12)
        if self.headline in PERCENT_METRICS and self.eval_samples > 0:
            p = min(max((a + b) / 2, 0.0), 1.0)
            margin = max(margin, 1.96 * math.sqrt(2 * p * (1 - p) / self.eval_samples))
        return a > b + margin if self.higher else a < b - margin

    def _rising(self, step: int) -> list[Health]:
        last = self._intervals[-4:]
        if len(last) < 4 or not all(b > a * (1 + _RELATIVE_NOISE) for a, b in zip(last, last[1:])):
            return []
        return self._raise(
            "loss_rising", step,
            f"The training loss has risen over the last three evaluation intervals "
            f"({last[0]:.4g} to {last[-1]:.4g}): the steps are too large to settle.",
            "Lower the learning rate (for example to a third).")

    def _falling(self, step: int) -> list[Health]:
        q = self._quality
        if len(q) < 4:
            return []
        best_step, best = max(q, key=lambda p: p[1] if self.higher else -p[1])
        if best_step >= q[-2][0] or not all(self._better(best, v) for _, v in q[-2:]):
            return []
        return self._raise(
            "quality_falling", step,
            f"The student's {self.headline.replace('_', ' ')} was at its best at step "
            f"{best_step} ({best:.4g}) and has got worse since ({q[-1][1]:.4g}): more steps "
            "make the student worse.",
            "Train for fewer steps or epochs (about as many as it took to reach the best), "
            "or with a lower learning rate.")

    def _collapse(self, e: Eval) -> list[Health]:
        out: list[Health] = []
        # Written answers (a language model's continuations) can loop; a class name cannot
        # (repeated_share is 0 below seven words).
        if e.samples:
            shares = [repeated_share(str(s.get("student", ""))) for s in e.samples]
            teacher = [repeated_share(str(s.get("teacher", ""))) for s in e.samples]
            mean_s = sum(shares) / len(shares)
            mean_t = sum(teacher) / len(teacher) if teacher else 0.0
            if mean_s > 0.5 and mean_s > mean_t + 0.2:
                out += self._raise(
                    "repetition", e.step,
                    f"The student's answers to the pinned prompts repeat themselves "
                    f"({mean_s:.0%} of their word triples are repeats; the teacher's "
                    f"{mean_t:.0%}): it is collapsing into loops.",
                    "Give the true next words more weight, lower the learning rate, or raise "
                    "the temperature.")
        s_ent, t_ent = e.metrics.get("entropy"), self._teacher.get("entropy")
        if isinstance(s_ent, (int, float)) \
                and isinstance(t_ent, (int, float)) and t_ent > 0 and s_ent < 0.5 * t_ent:
            out += self._raise(
                "entropy_collapse", e.step,
                f"The student has become far surer of its next words than the teacher "
                f"(entropy {s_ent:.3g} against the teacher's {t_ent:.3g}): it is collapsing "
                "onto a few answers.",
                "Use forward KL as the logit loss, which covers every answer the teacher finds "
                "likely, or raise the temperature.")
        spread = e.metrics.get("embedding_spread")
        t_spread = self._teacher.get("embedding_spread")
        if isinstance(spread, (int, float)) and spread < 0.05 \
                and (not isinstance(t_spread, (int, float)) or t_spread > 2 * spread):
            out += self._raise(
                "embedding_collapse", e.step,
                "The student's sentence vectors have become nearly all alike (their average "
                f"distance from each other is {spread:.3f}), so it can no longer tell "
                "sentences apart.",
                "Lower the learning rate, or give the similarity-structure loss a weight: it "
                "keeps sentences apart as the teacher does.")
        return out

    def _stuck(self, step: int) -> list[Health]:
        if step < self.total_steps / 3 or len(self._intervals) < 2 or not self._quality:
            return []
        # Interval means, each over several batches: one batch's loss alone wobbles.
        first, last = self._intervals[0], self._intervals[-1]
        moved = abs(first - last) > _STUCK * max(abs(first), 1e-12)
        start = self._quality[0][1]
        improved = any(self._better(v, start) for _, v in self._quality[1:])
        if moved or improved:
            return []
        return self._raise(
            "not_learning", step,
            f"A third of the steps are done and the student has not learned: the loss is "
            f"where it began ({first:.4g} to {last:.4g}) and the "
            f"{self.headline.replace('_', ' ')} has not improved.",
            "Raise the learning rate (for example tenfold), and check that the loss weights "
            "are not all tiny.")

    def _finished(self, e: Finished) -> list[Health]:
        s = e.summary if isinstance(e.summary, dict) else {}
        plain = s.get("baseline_metrics")
        after = s.get("student_metrics")
        if not isinstance(plain, dict) or not isinstance(after, dict):
            return []
        p, d = plain.get(self.headline), after.get(self.headline)
        if not isinstance(p, (int, float)) or not isinstance(d, (int, float)) \
                or not self._better(p, d):
            return []
        return self._raise(
            "worse_than_plain", int(s.get("steps", 0) or 0),
            f"The distilled student ended worse than the same student trained without the "
            f"teacher ({self.headline.replace('_', ' ')} {d:.4g} against {p:.4g}): the "
            "teacher is holding it back.",
            "Check the teacher's own figures first; then give the teacher's loss less weight "
            "or the true labels more.")


def watch_for(task: Any, method: Any, headline: str, total_steps: int,
              eval_samples: int = 0) -> HealthWatch:
    """The watch for a run of this task with these loss terms. The collapse checks look at
    what the evaluations report (continuations, entropy, the embeddings' spread), so they
    apply to whichever task reports it."""
    from kdstudio.core.objective import active_terms

    # With method.balance = "auto" the distiller rescales the terms itself: none is out of
    # balance, and the watch leaves them be.
    balanced = getattr(method, "balance", "none") == "auto"
    terms = [] if balanced else [TermInfo(t.name, t.weight(method), t.weight_key, t.label)
                                 for t in active_terms(task, method)]
    # The task says whether higher is better for its headline (with labels or without).
    higher = dict([task.headline(True), task.headline(False)]).get(headline, True)
    return HealthWatch(headline=(headline, higher), terms=terms, total_steps=total_steps,
                       eval_samples=eval_samples)


def watched(emit: Any, watch: HealthWatch, last_saved: Any = None) -> Any:
    """A sink that passes every event on, then the Health events the watch raises for it.
    An alarm that stops the run (a loss that is not a number) raises DivergedError right
    after it is reported, inside the step's report: no checkpoint of the broken weights is
    written after it. last_saved() names the step of the last good checkpoint, for the
    message."""
    from kdstudio.core.errors import DivergedError

    def sink(event: Event) -> None:
        emit(event)
        if isinstance(event, Finished):
            return  # the end's alarms are checked before the run's summary is written
        for h in watch(event):
            emit(h)
            if h.level == "error":
                step = last_saved() if last_saved is not None else None
                kept = (f" The last good checkpoint (step {step}) is kept: 'kdstudio resume' "
                        "continues from it once the setting is changed." if step else "")
                raise DivergedError(h.message + kept, hint=h.advice)
    return sink


def conclude(watch: HealthWatch, summary: dict[str, Any], emit: Any, update: Any) -> dict[str, Any]:
    """At the end of a finished run: the alarms only its summary can raise (worse than plain
    training), reported; then every alarm of the run recorded in the summary (update is
    Run.update_summary). Returns the summary."""
    for h in watch(Finished(status="finished", run_dir="", summary=summary)):
        emit(h)
    if not watch.raised:
        return summary
    return update(health=[h.to_dict() for h in watch.raised.values()])
