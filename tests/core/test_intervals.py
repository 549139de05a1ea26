"""The bootstrap's 95% intervals (intervals.py) and the figures' parts per row that tasks hand
over for them."""

import math

import torch

from kdstudio.core.intervals import (
    MacroF1,
    Mean,
    PairRankCorrelation,
    Ratio,
    intervals,
    paired_interval,
    resample_counts,
)
from kdstudio.core.measures import classification_metrics


def test_each_resample_draws_n_rows_and_is_seeded():
    counts = resample_counts(50, resamples=200, seed=3)
    assert counts.shape == (200, 50)
    assert torch.equal(counts.sum(1), torch.full((200,), 50.0, dtype=torch.float64))
    assert torch.equal(counts, resample_counts(50, resamples=200, seed=3))
    assert not torch.equal(counts, resample_counts(50, resamples=200, seed=4))


def test_a_share_of_rows_gets_about_the_normal_intervals_width():
    g = torch.Generator().manual_seed(0)
    right = (torch.rand(400, generator=g) < 0.7).float()
    lo, hi = intervals({"accuracy": Mean(right)})["accuracy"]
    p = right.mean().item()
    assert lo < p < hi
    # The normal approximation's 95% width, 2 * 1.96 * sqrt(p(1-p)/n) = 0.090 here; the
    # percentile bootstrap of 1000 resamples lands within a few percent of it.
    width = 2 * 1.96 * math.sqrt(p * (1 - p) / 400)
    assert abs((hi - lo) - width) < 0.15 * width


def test_rows_that_do_not_vary_give_no_spread_and_one_row_gives_no_interval():
    lo, hi = intervals({"cos": Mean(torch.full((30,), 0.25))})["cos"]
    assert lo == hi == 0.25
    assert intervals({"cos": Mean(torch.tensor([0.5]))}) == {}


def test_each_figure_on_all_rows_once_is_the_figure_itself():
    g = torch.Generator().manual_seed(1)
    pred, labels = torch.randint(4, (120,), generator=g), torch.randint(4, (120,), generator=g)
    once = torch.ones(1, 120, dtype=torch.float64)
    assert abs(MacroF1(pred, labels).on(once).item()
               - classification_metrics(pred, labels)["macro_f1"]) < 1e-12
    nll, tokens = torch.rand(120, generator=g) * 30, torch.randint(5, 40, (120,), generator=g)
    ppl = Ratio(nll, tokens.double(), exp=True).on(once).item()
    assert abs(ppl - math.exp(nll.double().sum().item() / tokens.sum().item())) < 1e-9


def test_paired_bootstrap_of_two_figures_on_the_same_rows_is_narrower_than_apart():
    g = torch.Generator().manual_seed(2)
    teacher = (torch.rand(300, generator=g) < 0.8).float()
    student = teacher.clone()
    student[:15] = 1 - student[:15]  # the student differs from the teacher on 5% of the rows
    lo, hi = paired_interval(Mean(student), Mean(teacher), kind="difference")
    apart = intervals({"s": Mean(student), "t": Mean(teacher)})
    assert lo <= (student.mean() - teacher.mean()).item() <= hi
    # Apart, each figure's own spread (about +-0.045) adds up; paired, only the 15 rows that
    # differ vary the difference.
    assert hi - lo < 0.5 * ((apart["s"][1] - apart["s"][0]) + (apart["t"][1] - apart["t"][0]))
    same = paired_interval(Mean(teacher), Mean(teacher))
    assert same == [1.0, 1.0]
    assert paired_interval(Mean(teacher), Mean(teacher[:10])) is None


class _Rows:
    """The part of an Evaluator a task hands its figures' rows to."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.kept = {}

    def keep_rows(self, figures):
        self.kept = dict(figures)


def test_embedding_figures_and_spearman_on_all_rows_once_are_the_figures_themselves():
    import torch.nn.functional as F

    from kdstudio.core.measures import embedding_metrics
    from kdstudio.core.tasks import get_task

    g = torch.Generator().manual_seed(4)
    t = torch.randn(60, 16, generator=g)
    s = t + 0.9 * torch.randn(60, 16, generator=g)
    labels = torch.randint(3, (60,), generator=g)
    ev = _Rows(student_batches=[s], labels=lambda: labels, project=lambda x: x,
               outputs=lambda model, batches, project: [s], teacher_outputs=lambda: [t])
    figures = get_task("sentence-embedding").student_metrics(ev, None)
    once = torch.ones(1, 60, dtype=torch.float64)
    assert set(ev.kept) == {"cosine_to_teacher", "neighbour_agreement", "spearman", "knn_accuracy"}
    for name, fig in ev.kept.items():
        assert abs(fig.on(once).item() - figures[name]) < 1e-6, name
    assert figures["spearman"] == embedding_metrics(s, t, labels)["spearman"]
    assert 0.2 < figures["spearman"] < 0.9  # noisy copies: neither 0 nor 1, so a real test
    lo, hi = intervals(ev.kept)["spearman"]
    assert lo < figures["spearman"] < hi and hi - lo < 0.5
    # Identical vectors rank every pair alike: no spread at all.
    same = PairRankCorrelation.of(*(F.normalize(t, dim=-1) @ F.normalize(t, dim=-1).T,) * 2)
    assert intervals({"spearman": same})["spearman"] == [1.0, 1.0]


def test_entity_figures_from_each_sentences_counts_are_seqevals_on_all_rows_once():
    from kdstudio.core.measures import tagging_metrics
    from kdstudio.core.tasks.token_classification import _rows

    g = torch.Generator().manual_seed(5)
    tags = ["O", "B-PLACE", "I-PLACE", "B-TIME", "I-TIME"]
    gold = [[tags[i] for i in torch.randint(5, (int(n),), generator=g)]
            for n in torch.randint(1, 12, (80,), generator=g)]
    # A tagger right on about 70% of the words.
    pred = [[w if torch.rand(1, generator=g) < 0.7 else tags[int(torch.randint(5, (1,), generator=g))]
             for w in row] for row in gold]
    figures = tagging_metrics(gold, pred)
    rows = _rows(gold, pred)
    once = torch.ones(1, 80, dtype=torch.float64)
    for name, fig in rows.items():
        assert abs(fig.on(once).item() - figures[name]) < 1e-12, name
    assert 0.2 < figures["entity_f1"] < 0.9
    lo, hi = intervals(rows)["entity_f1"]
    assert lo < figures["entity_f1"] < hi
    # A sentence with no entity on either side counts nothing: F1 over none is 0, as seqeval's.
    assert _rows([["O"]], [["O"]])["entity_f1"].on(torch.ones(1, 1, dtype=torch.float64)).item() == 0.0


def test_a_quality_above_the_teacher_reads_with_its_interval_before_saying_so():
    from kdstudio.core.metrics import format_quality

    assert format_quality(1.117, interval=(1.097, 1.137)) == "111.7% ± 2.0% (above the teacher)"
    assert format_quality(1.117) == "111.7% (above the teacher)"
    assert format_quality(0.967, interval=(0.947, 0.987)) == "96.7% ± 2.0%"
    assert format_quality(None, interval=(0.9, 1.0)) == "-"


def test_the_plain_training_column_shows_its_own_intervals_and_above_the_teacher_reads_last():
    from kdstudio.core.run_compare import summary_rows

    s = {"headline_metric": "knn_accuracy", "quality_retained": 1.117,
         "teacher_metrics": {"knn_accuracy": 0.6}, "student_metrics_before": {"knn_accuracy": 0.5},
         "student_metrics": {"knn_accuracy": 0.67}, "baseline_metrics": {"knn_accuracy": 0.55},
         "intervals": {"knn_accuracy": [0.64, 0.70], "quality_retained": [1.097, 1.137]},
         "baseline": {"quality_retained": 0.55 / 0.6,
                      "intervals": {"knn_accuracy": [0.52, 0.58], "quality_retained": [0.9, 0.94]}}}
    rows = {r[0]: r[1:] for r in summary_rows(s)}
    figure = next(v for k, v in rows.items() if k.lower().startswith("nearest"))
    assert figure[2] == "67.0% ± 3.0%" and figure[3] == "55.0% ± 3.0%"
    kept = next(v for k, v in rows.items() if k.startswith("Quality retained"))
    assert kept[2] == "111.7% ± 2.0% (above the teacher)" and kept[3] == "91.7% ± 2.0%"
