"""Make the built-in tagged corpus, everyday-entities, from the built-in everyday-topics corpus.

    python packaging/make_entity_corpus.py [--out resources/corpus/everyday-entities.jsonl]

Each sentence of resources/corpus/everyday-topics.jsonl is cut into words (punctuation apart,
as the app cuts a Compare input: kdstudio.core.tasks.word_tags.split_words) and every word
is tagged by the hand-written rules and word lists below, in the BIO scheme, with four kinds
of entity: PLACE (named places, venues and kinds of place you can go to), TIME (days,
months, seasons, holidays, parts of the day and words such as tonight, with this/next/last/
every before them), PERSON (named people, family words and roles such as doctor or coach)
and FOOD (food and drink). Neighbouring words of one kind form one entity ("Sunday
morning", "olive oil", "Elm Street"). Deterministic: the same input gives the same file.
The rules are a gazetteer, not a person's judgement: see resources/corpus/DATASHEET.md for
what that means for the tags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdstudio.core.tasks.word_tags import split_words  # noqa: E402

SOURCE = ROOT / "resources" / "corpus" / "everyday-topics.jsonl"
OUT = ROOT / "resources" / "corpus" / "everyday-entities.jsonl"

PEOPLE_NAMES = set("""amara anika ayesha bartholomew blake bogdan clara dalby dara elias emeka
evan farah farida greta harwood henrik ingrid janek jonas kenji leona lina lorenzo lucia
marcus marguerite mateo mensah mira nadia okafor oskar priya ravi rosa rowena sadia teodor
tomas yusuf zofia shakespeare chopin""".split())
PEOPLE_WORDS = set("""mum mom dad gran grandpa grandma grandmother grandfather grandparents
aunt uncle sister sisters brother brothers daughter son wife husband neighbour neighbours
neighbor neighbors cousin parents doctor doctors nurse nurses chef chefs coach coaches teacher
teachers pharmacist landlord manager driver striker goalkeeper artist painter poet
referee referees dentist plumber waiter""".split())
PLACE_NAMES = set("""lisbon madrid chile vellmar kessford millbrook""".split())
PLACE_WORDS = set("""station airport hotel museum library hospital clinic school bakery cafe
café restaurant pub supermarket market cinema theatre theater gallery stadium church
cathedral castle gym harbour beach island lake river valley forest mountain mountains village
town city park coast farm bookshop guesthouse""".split())
PLACE_WORDS |= {w[:-1] + "ies" if w.endswith("y") and w[-2] not in "aeiou"
                else w + "es" if w.endswith(("ch", "s")) else w + "s" for w in PLACE_WORDS}
STREET_WORDS = {"street", "road", "lane", "square", "avenue"}
PLACE_PHRASES = [("near", "east"), ("southern", "ocean"), ("olive", "tree"),
                 ("international", "space", "station")]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
TIME_WORDS = set(DAYS + [d + "s" for d in DAYS] + [m for m in MONTHS if m not in ("may", "march")]
                 + """christmas easter today tonight tomorrow yesterday weekend weekends morning
                 mornings afternoon afternoons evening evenings midnight dawn noon summer summers
                 winter winters autumn spring""".split())
TIME_LEADS = {"this", "next", "last", "every", "each"}
# Time words only after a lead: "next year", "last week" (not "a year of work").
LED_TIME_WORDS = {"week", "month", "year", "weeks", "months", "years", "season"}
FOOD_WORDS = set("""bread soup fruit sauce eggs egg oil tea sugar butter flour coffee milk salt
beans chicken yoghurt yogurt garlic herbs salad pasta cake wine cinnamon lime mushrooms cream
honey stew pizza potatoes apple apples peas courgettes vegetables chips cheese rice curry
lemon tomatoes tomato onions onion pepper basil sardines pie biscuits toast porridge jam
carrots noodles noodle juice sandwich sandwiches dessert loaf snacks chestnuts ginger
chocolate olives strawberries berries cereal""".split())
FOOD_PHRASES = [("olive", "oil"), ("orange", "peel"), ("orange", "juice"), ("spring", "onions"),
                ("ice", "cream"), ("cinnamon", "stick")]


def _base(word: str) -> str:
    w = word.lower()
    return w[:-2] if w.endswith(("'s", "’s")) else w


def tag_sentence(words: list[str]) -> list[str]:
    """The BIO tag of each word by the rules of this module."""
    low = [_base(w) for w in words]
    kinds: list[str | None] = [None] * len(words)
    n = len(words)
    # Phrases first (longest first), so their words are one entity of the phrase's kind.
    for kind, phrases in (("PLACE", PLACE_PHRASES), ("FOOD", FOOD_PHRASES)):
        for phrase in sorted(phrases, key=len, reverse=True):
            k = len(phrase)
            for i in range(n - k + 1):
                if tuple(low[i:i + k]) == phrase and all(x is None for x in kinds[i:i + k]):
                    kinds[i:i + k] = [kind] * k
    for i, (w, lw) in enumerate(zip(words, low)):
        if kinds[i] is not None:
            continue
        prev = low[i - 1] if i else ""
        nxt = low[i + 1] if i + 1 < n else ""
        if lw in PEOPLE_NAMES and w[0].isupper():
            kinds[i] = "PERSON"
        elif lw == "coach" and (nxt in {"journeys", "journey", "trip", "instead", "stopped"}
                                or prev == "by"):
            continue  # the bus, not the trainer
        elif lw in PEOPLE_WORDS:
            kinds[i] = "PERSON"
        elif lw in PLACE_NAMES and w[0].isupper():
            kinds[i] = "PLACE"
        elif lw in STREET_WORDS and i and words[i - 1][:1].isupper() and i - 1 > 0:
            kinds[i - 1] = kinds[i] = "PLACE"  # Elm Street, Harbour Road
        elif lw == "park" and prev == "to":
            continue  # to park the car
        elif lw in PLACE_WORDS:
            kinds[i] = "PLACE"
            if prev == "car" and lw == "park":
                kinds[i - 1] = "PLACE"
        elif lw in ("may", "march") and w[0].isupper() and i > 0:
            kinds[i] = "TIME"  # the months, not the verbs
        elif lw in TIME_WORDS and not (lw == "spring" and w == "Springs"):
            kinds[i] = "TIME"
        elif lw in FOOD_WORDS:
            kinds[i] = "FOOD"
    # this/next/last/every before a time word belongs to it: "next Sunday", "every spring".
    for i in range(n - 1):
        if low[i] in TIME_LEADS and kinds[i] is None and kinds[i + 1] is None \
                and low[i + 1] in LED_TIME_WORDS:
            kinds[i + 1] = "TIME"
        if low[i] in TIME_LEADS and kinds[i] is None and kinds[i + 1] == "TIME":
            kinds[i] = "TIME"
    tags, prev_kind = [], None
    for kind in kinds:
        if kind is None:
            tags.append("O")
        else:
            tags.append(("I-" if kind == prev_kind else "B-") + kind)
        prev_kind = kind
    return tags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    lines, counts = [], {}
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        words = split_words(json.loads(line)["text"])
        tags = tag_sentence(words)
        for t in tags:
            if t.startswith("B-"):
                counts[t[2:]] = counts.get(t[2:], 0) + 1
        lines.append(json.dumps({"tokens": words, "ner_tags": tags}, ensure_ascii=False))
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"{len(lines)} sentences, entities: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
