"""The intent of a question, and a deterministic parser that reads it without any model.

An :class:`Intent` says which models, which part of the test set (the whole ``dataset``, one
``batch``, one ``image``, or, with no id, every batch or image to rank them; or the ``change``
of the test-set figures since the previous version, from the stored comparison), which metrics
and which aggregate (``macro`` image mean, ``micro`` pooled pixels, ``max`` / ``min`` ranking).
The LLM's :class:`~.reader.Reader` produces one by choosing among the run's names;
:func:`parse_question` produces another from the same vocabulary by rules. An answer is verified only when both agree (compared by :meth:`Intent.canonical`).

Example::

    parse_question("What is the DSC of model 2 on batch 3?", catalog)
    # Intent(models=('balanced',), scope='batch', batch=3, metrics=('dice',), aggregate='macro')
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .catalog import ASKABLE_DATASET_METRICS, METRIC_LABELS, Catalog
from .vocabulary import (ALL_MODELS, CHANGE_AGGREGATE_PHRASES, CHANGE_PHRASES, UNSUPPORTED_PREFIX, Vocabulary,
                         normalise, vocabulary_of)

__all__ = ["AGGREGATES", "NO_COMPARISON", "SCOPES", "Intent", "change_not_compared", "is_about_audit",
           "parse_question", "version_not_compared"]

SCOPES = ("dataset", "batch", "image", "change")
AGGREGATES = ("macro", "micro", "max", "min")

_AGGREGATE_WORDS = (
    ("micro", r"micro|pixel pooled|pooled|pixel level|over all pixels|all pixels together"),
    ("macro", r"macro|image mean|mean over images|per image mean|averaged over images|per image average"),
    ("max", r"highest|best|maximum|max|top|largest|greatest|strongest"),
    ("min", r"lowest|worst|minimum|min|smallest|poorest|weakest"),
)


# "which batch", "worst image", "the batch with the lowest ...", "batches ranked by": questions that rank
# units. A bare mention ("image_metrics" in pasted SQL) does not make a question about images.
_RANKED = (r"\b(?:which|what|best|worst|highest|lowest|top|bottom|weakest|strongest|poorest|hardest|easiest) "
           r"{unit}(?:es|s)?\b|\b{unit}(?:es|s)? (?:with|has|had|have|where|scoring|scored|ranked|by)\b"
           r"|\b{unit}(?:es|s)? (?:is|was) (?:the )?(?:best|worst|highest|lowest)\b"
           r"|\b(?:best|worst|highest|lowest|top|bottom) [a-z0-9]+ {unit}\b")  # "the lowest-recall image"


@dataclass(frozen=True)
class Intent:
    models: tuple[str, ...]
    scope: str = "dataset"
    batch: int | None = None
    image: str | None = None
    metrics: tuple[str, ...] = ("dice",)
    aggregate: str = "macro"
    # Things the question names that the database does not hold ("batch 9999", "model 7").
    missing: tuple[str, ...] = field(default=(), compare=False)

    def canonical(self, catalog: Catalog) -> "Intent":
        """The same question in one normal form, so equal meanings compare equal."""
        order = {n: i for i, n in enumerate(catalog.model_names)}
        models = tuple(sorted(set(self.models), key=lambda n: order.get(n, len(order))))
        metric_order = {m: i for i, m in enumerate(catalog.metrics)}
        metrics = tuple(sorted(set(self.metrics), key=lambda m: metric_order.get(m, len(metric_order))))
        batch = self.batch if self.scope == "batch" else None
        image = self.image if self.scope == "image" else None
        aggregate = self.aggregate
        one_unit = self.scope in ("dataset", "change") or batch is not None or image is not None
        if aggregate == "micro" and self.scope != "change" and (
                image is not None or all(m in ASKABLE_DATASET_METRICS for m in metrics)):
            aggregate = "macro"  # one image, or a figure with a single averaging: nothing to pool
        if aggregate in ("max", "min") and one_unit and len(models) == 1:
            aggregate = "macro"  # ranking one model against itself is just its value
        return Intent(models, self.scope, batch, image, metrics, aggregate, self.missing)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"], d["metrics"], d["missing"] = list(self.models), list(self.metrics), list(self.missing)
        return d

    def describe(self) -> str:
        """A short human reading of the intent, shown when two readings disagree."""
        where = {"dataset": "test set", "change": "change since the previous version", "batch": f"batch {self.batch}" if self.batch is not None else "every batch",
                 "image": f"image {self.image}" if self.image is not None else "every image"}[self.scope]
        metrics = ", ".join(METRIC_LABELS.get(m, m) for m in self.metrics)
        return f"{metrics} ({self.aggregate}) of {', '.join(self.models)} on {where}"


def _norm(text: str) -> str:
    """The vocabulary's normal form, with hyphens, apostrophes and question marks as spaces and
    one spelling of "optimized": the form the parser matches phrases in."""
    text = re.sub(r"[_\-'?]", " ", normalise(text).replace("optimised", "optimized"))
    text = re.sub(r"\s+", " ", text).strip()
    # "the first and third models" names the first model and the third model.
    return re.sub(r"\b(\w+) (and|or) (\w+) (model|variant|network)s\b", r"\1 \4 \2 \3 \4", text)


def _phrase_pattern(phrase: str) -> str:
    return rf"(?<![a-z0-9#]){re.escape(_norm(phrase))}(?![a-z0-9])"


def _find_models(text: str, catalog: Catalog) -> tuple[list[str], list[str], str]:
    """Models named in ``text`` (normalised), things that look like models but are unknown, and
    the text with every model mention blanked out (so "recall-optimized" is not read as recall).

    Known models are found by the vocabulary's phrases (name and spellings, number, ordinal,
    descriptions from the loss settings), longest first; the patterns below only catch
    references to models the run does not have ("model 7", "the speed-optimized model")."""
    found: list[tuple[int, str]] = []
    missing: list[str] = []
    blank = text

    def take(m: re.Match, name: str | None, label: str) -> None:
        nonlocal blank
        if name is None:
            missing.append(label)
        elif name != ALL_MODELS:
            found.append((m.start(), name))
        # "_" never occurs in normalised text, so words on either side cannot join into a new match.
        blank = blank[:m.start()] + "_" * (m.end() - m.start()) + blank[m.end():]

    for phrase, name in Vocabulary.phrase_index(vocabulary_of(catalog).models):
        for m in re.finditer(_phrase_pattern(phrase), blank):
            take(m, name, phrase)
    numbers = "|".join(("one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
    for m in re.finditer(rf"\b(?:model|variant|network|net)\s*(?:#|no\.?|number)?\s*(\d+|{numbers})\b", blank):
        take(m, None, f"model {m.group(1)}")
    for m in re.finditer(r"\b(\d+(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)\s+"
                         r"(?:model|variant|network)\b", blank):
        take(m, None, f"the {m.group(1)} model")
    for m in re.finditer(r"\b([a-z0-9]+)\s+optimized\b", blank):
        if m.group(1) not in ("is", "the", "a", "most", "best", "well", "fully", "not"):
            take(m, None, f"{m.group(1)}-optimized model")
    for m in re.finditer(r"\b(?:model|variant) (?:named|called) ([a-z0-9 ]+?)(?:\s|$|\?)", blank):
        take(m, None, f"model {m.group(1)}")
    return [n for _, n in sorted(found)], missing, blank


def _find_metrics(text: str, catalog: Catalog) -> list[str]:
    """Metrics named in ``text`` by the vocabulary's phrases (synonyms, labels, spellings), longest first."""
    phrases = [(_norm(p), k) for p, k in Vocabulary.phrase_index(vocabulary_of(catalog).metrics)
               if not k.startswith(UNSUPPORTED_PREFIX)]
    phrases = sorted(dict.fromkeys(phrases), key=lambda pk: -len(pk[0]))
    found: list[tuple[int, str]] = []
    for phrase, key in phrases:
        for m in re.finditer(rf"\b{re.escape(phrase)}\b", text):
            found.append((m.start(), key))
            text = text[:m.start()] + "_" * len(phrase) + text[m.end():]
    out: list[str] = []
    for _, key in sorted(found):
        if key not in out:
            out.append(key)
    return out


def _find_unsupported(text: str, catalog: Catalog) -> tuple[str, list[str]]:
    """Metrics the question names that no run stores (Hausdorff distance, AUC), and the text
    with them blanked out, so "average precision" is not read as precision nor "surface Dice"
    as Dice."""
    found: list[tuple[int, str]] = []
    phrases = sorted({(_norm(p), k[len(UNSUPPORTED_PREFIX):]) for p, k in Vocabulary.phrase_index(
        vocabulary_of(catalog).metrics) if k.startswith(UNSUPPORTED_PREFIX)}, key=lambda p: (-len(p[0]), p))
    for phrase, name in phrases:
        for m in re.finditer(rf"\b{re.escape(phrase)}\b", text):
            found.append((m.start(), name))
            text = text[:m.start()] + "_" * len(phrase) + text[m.end():]
    return text, list(dict.fromkeys(name for _, name in sorted(found)))


NO_COMPARISON = "a previous version (this run stores no comparison with one)"


_VERSION = re.compile(r"\b(?:v\s?0*(\d{1,4})|version\s*(?:#|no\.?|number)?\s*v?0*(\d{1,4}))\b")
_CHANGE = re.compile("|".join(_phrase_pattern(p) for p in sorted(CHANGE_PHRASES, key=len, reverse=True)))
_CHANGE_RANK = tuple((key, re.compile("|".join(_phrase_pattern(p) for p in phrases)))
                     for key, phrases in CHANGE_AGGREGATE_PHRASES.items())


def _change_scope(rest: str, catalog: Catalog) -> tuple[bool, list[str]]:
    """Whether the question asks how figures changed between versions, and what it names that
    the store lacks (a version it was not compared with, or no comparison at all)."""
    versions = [int(a or b) for a, b in _VERSION.findall(rest)]
    if not versions and not _CHANGE.search(rest):
        return False, []
    if catalog.against is None:
        return True, [NO_COMPARISON]
    against = int(catalog.against.lstrip("v"))
    return True, [version_not_compared(n, catalog) for n in dict.fromkeys(versions) if n != against]


def version_not_compared(number: int, catalog: Catalog) -> str:
    """What "not found" says for a version the stored comparison is not against."""
    return f"version v{number:03d}"


def parse_question(question: str, catalog: Catalog) -> Intent:
    """Read a question with rules and synonyms only (no model), against ``catalog``."""
    text = _norm(question)
    models, missing, rest = _find_models(text, catalog)

    scope, batch, image = "dataset", None, None
    is_change, change_missing = _change_scope(rest, catalog)
    if is_change:
        scope = "change"
        missing += change_missing
        rest = _VERSION.sub(" ", rest)
        for unit in ("batch", "image"):
            if re.search(rf"\b{unit}(?:es|s)?\s*(?:#|no\.?|number)?\s*\d+\b", rest) or \
                    re.search(_RANKED.format(unit=unit), rest):
                missing.append(f"a change per {unit} (versions are compared over the whole test set)")
    m = None if is_change else re.search(r"\bbatch(?:es)?\s*(?:#|no\.?|number|index|id)?\s*(\d+)\b", rest)
    if m:
        scope, batch = "batch", int(m.group(1))
        if batch not in catalog.batches:
            missing.append(f"batch {batch}")
    elif is_change:
        pass
    elif re.search(_RANKED.format(unit="batch"), rest):
        scope = "batch"
    raw_words = re.findall(r"[A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9]", question)
    ids = [w for w in raw_words if catalog.image(w)]
    if ids and scope == "change":
        missing.append("a change per image (versions are compared over the whole test set)")
    elif ids and scope == "dataset":
        scope, image = "image", catalog.image(ids[0])
    elif scope == "dataset":
        m2 = re.search(r"\bimage\s+(?:id\s+)?([A-Za-z0-9][A-Za-z0-9_.\-]*)", question, re.IGNORECASE)
        looks_like_id = m2 and re.search(r"\d", m2.group(1))
        if looks_like_id:
            scope = "image"
            missing.append(f"image {m2.group(1)}")
        elif re.search(_RANKED.format(unit="image"), rest):
            scope = "image"

    rest, unsupported = _find_unsupported(rest, catalog)
    missing += [f"metric {name} (not computed by this audit)" for name in unsupported]
    metrics = _find_metrics(rest, catalog)
    unknown_metrics = [m for m in metrics if m not in catalog.metrics] + unsupported
    missing += [f"metric {METRIC_LABELS.get(m, m)}" for m in unknown_metrics]
    metrics = [m for m in metrics if m in catalog.metrics] or (["dice"] if not unknown_metrics else [])
    if scope == "change" and catalog.against:
        missing += [change_not_compared(mtr, catalog) for mtr in metrics if mtr not in catalog.compared]
    elif scope != "dataset":
        for mtr in metrics:
            if mtr in ASKABLE_DATASET_METRICS:
                missing.append(f"{METRIC_LABELS[mtr]} per {scope} (recorded for the whole test set only)")

    aggregate = "macro"
    if scope == "change":
        # A change is ranked by its own words ("dropped most"); "worse" or "better" alone
        # say which way it went, not that models are ranked.
        aggregate = next((key for key, pattern in _CHANGE_RANK if pattern.search(rest)), "macro")
        if re.search(rf"\b(?:{dict(_AGGREGATE_WORDS)['micro']})\b", rest):
            aggregate = "micro"
    else:
        for key, pattern in _AGGREGATE_WORDS:
            if re.search(rf"\b(?:{pattern})\b", rest):
                aggregate = key
                break
    if scope == "change" and aggregate == "micro":
        missing.append("a pooled-pixel change (versions are compared on image means)")

    if not models and not any(x.startswith(("model", "the ")) or "optimized model" in x for x in missing):
        models = catalog.model_names  # no model named: the question is about all of them
    return Intent(tuple(dict.fromkeys(models)), scope, batch, image, tuple(metrics) or ("dice",), aggregate,
                  tuple(dict.fromkeys(missing)))


def change_not_compared(metric: str, catalog: Catalog) -> str:
    """What "not found" says for the change of a metric the stored comparison does not hold."""
    compared = ", ".join(METRIC_LABELS.get(m, m) for m in catalog.compared) or "none"
    return f"a change in {METRIC_LABELS.get(metric, metric)} (versions are compared on {compared})"


# Words that make a question about an audit even when it names nothing the vocabulary lists
# ("how well do the models do?").
_AUDIT_WORDS = re.compile(r"\b(?:models?|variants?|networks?|batch(?:es)?|images?|audit|scores?|scored|metrics?|"
                          r"segment\w*|lesions?|masks?|perform\w*|results?|accura\w*|predict\w*|test set|"
                          r"dataset|versions?|failures?|pixels?|errors?|false positives?|false negatives?)\b")


def is_about_audit(question: str, catalog: Catalog) -> bool:
    """Whether ``question`` names anything an audit holds (a model, a metric, even one no run
    stores, a batch, an image, a ranking) or talks about models and results at all."""
    text = _norm(question)
    if _AUDIT_WORDS.search(text):
        return True
    vocab = vocabulary_of(catalog)
    phrases = [p for choices in (vocab.models, vocab.metrics) for ps in choices.values() for p in ps]
    if any(re.search(_phrase_pattern(p), text) for p in phrases):
        return True
    return any(catalog.image(w) for w in re.findall(r"[a-z0-9][a-z0-9_.\-]*[a-z0-9]", normalise(question)))
