"""Every way a question may name something a run holds: the candidates both readers use.

Built from a :class:`~.catalog.Catalog` alone, never from example questions: each model's
name with its spellings (hyphens, -ise/-ize), its number and ordinal, and descriptions taken
from its loss settings; each metric's registry synonyms with their spellings; the averaging
and ranking words; the words of a question about the change since the previous version; and the metrics people ask about that no run stores. The LLM reader scores
these phrases as continuations; the rule parser looks for them in the question. Phrases are
in :func:`normalise`\\ d form (lower case, one kind of dash, single spaces).

Example::

    v = Vocabulary.from_catalog(catalog)
    v.models["balanced"]   # ('balanced', 'balanced model', 'model 2', 'the second model', 'dice loss', ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..metrics import REGISTRY, UNSUPPORTED_METRICS
from .catalog import ASKABLE_DATASET_METRICS, ASKABLE_IMAGE_METRICS, Catalog, ModelRef

__all__ = ["ALL_MODELS", "CHANGE_AGGREGATE_PHRASES", "CHANGE_PHRASES", "NOT_STATED", "UNSUPPORTED_PREFIX", "Vocabulary", "normalise", "spellings", "vocabulary_of"]

ALL_MODELS = "*all*"  # the question is about every model ("each model", "which model")
NOT_STATED = "*not stated*"  # the field is not mentioned: its default applies
UNSUPPORTED_PREFIX = "?"  # "?Hausdorff distance": a metric no run stores

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
_UNIT_WORDS = ("model", "variant", "network", "net", "one")

# A question about the change since the previous version ("did Dice drop since v001?"): the
# stored comparison answers it. The version itself ("since v001") is added per run.
CHANGE_PHRASES = ("since the previous version", "since the last version", "since the prior version",
                  "compared with the previous version", "compared to the previous version",
                  "than the previous version", "than the last version", "vs the previous version",
                  "versus the previous version", "from the previous version", "against the previous version",
                  "since the previous run", "since the last run", "than the last run", "than last time",
                  "since last time", "since last night", "since yesterday", "since the last audit",
                  "since the previous audit", "previous version", "last version", "prior version", "previous run",
                  "last run", "last nightly", "the nightly before", "between versions", "between the versions",
                  "version to version", "drop", "dropped", "fall", "fell", "decline", "declined", "decrease",
                  "decreased", "improve", "improved", "increase", "increased", "change", "changed", "regress",
                  "regressed", "regression", "get worse", "got worse", "get better", "got better", "delta",
                  "went down", "gone down", "go down", "went up", "gone up", "go up", "lost", "gained")
# "which model's Dice dropped most": rankings of the change itself.
CHANGE_AGGREGATE_PHRASES: dict[str, tuple[str, ...]] = {
    "max": ("improved most", "improved the most", "most improved", "gained most", "gained the most",
            "biggest gain", "largest gain", "biggest improvement", "largest improvement", "rose most",
            "rose the most", "increased most", "increased the most"),
    "min": ("dropped most", "dropped the most", "biggest drop", "largest drop", "fell most", "fell the most",
            "declined most", "declined the most", "biggest decline", "largest decline", "lost most",
            "lost the most", "regressed most", "regressed the most", "decreased most", "decreased the most",
            "worst regression", "biggest regression"),
}

AGGREGATE_PHRASES: dict[str, tuple[str, ...]] = {
    "micro": ("pixel-pooled", "pooled", "micro", "micro-averaged", "micro average", "over all pixels",
              "all pixels together", "pixel level", "pixel-level", "pooled over pixels", "pooling pixels"),
    "macro": ("image mean", "macro", "macro-averaged", "macro average", "mean over images", "per-image mean",
              "averaged over images", "per-image average", "average over images", "image-averaged",
              "image-mean"),
    "max": ("highest", "best", "maximum", "max", "top", "largest", "greatest", "strongest", "higher", "better",
            *CHANGE_AGGREGATE_PHRASES["max"]),
    "min": ("lowest", "worst", "minimum", "min", "smallest", "poorest", "weakest", "lower", "worse",
            *CHANGE_AGGREGATE_PHRASES["min"]),
}
ALL_MODEL_PHRASES = ("each model", "every model", "all models", "all the models", "all three models",
                     "the models", "each variant", "every variant", "all variants", "all three",
                     "all of them", "each of the models", "which model", "which variant", "which network",
                     "what model", "the three models", "both models", "every network", "each network",
                     "all networks", "among the models", "across models", "per model", "per variant")
RANKED_UNIT_PHRASES = {
    "batch": ("which batch", "what batch", "best batch", "worst batch", "every batch", "each batch", "per batch",
              "the batch with", "batches", "hardest batch", "easiest batch"),
    "image": ("which image", "what image", "best image", "worst image", "every image", "each image", "per image",
              "the image with", "images", "hardest image", "easiest image", "which case", "worst case"),
}


def normalise(text: str) -> str:
    """Lower case, one kind of dash, single spaces: the form phrases and questions are compared in."""
    text = text.lower().replace("ø", "o")
    text = re.sub(r"[‐‑‒–—―]", "-", text)
    text = re.sub(r"[’‘`]", "'", text)
    text = re.sub(r"[^a-z0-9#.%'_\-? ]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def spellings(phrase: str) -> tuple[str, ...]:
    """``phrase`` as people write it: with and without hyphens, -ize and -ise, F1 and F-1."""
    base = normalise(phrase)
    forms = {base, base.replace("-", " "), base.replace("-", "")}
    for f in list(forms):
        forms.add(re.sub(r"i[sz](e|ed|es|ing|ation)\b", lambda m: "is" + m.group(1), f))
        forms.add(re.sub(r"i[sz](e|ed|es|ing|ation)\b", lambda m: "iz" + m.group(1), f))
    forms.discard("")
    return tuple(sorted(forms, key=lambda s: (s != base, len(s), s)))


_METRIC_WORDS = {w for m in REGISTRY.values() for syn in m.synonyms for w in syn.split()}


def _loss_phrases(ref: ModelRef) -> list[str]:
    """How people describe a variant by what its loss does, from its recorded loss settings."""
    loss, text = ref.loss or {}, normalise(ref.description)
    kind = loss.get("kind") or next((k for k in ("tversky", "hybrid", "dice") if k in text), "")
    alpha, beta = float(loss.get("alpha", 0.5)), float(loss.get("beta", 0.5))
    if not loss:
        if "false positive" in text:
            alpha, beta = 0.7, 0.3
        elif "false negative" in text:
            alpha, beta = 0.3, 0.7
    out = [f"{kind} loss", f"{kind}-loss model", f"{kind}-trained", f"trained with {kind} loss",
           f"trained with the {kind} loss"] if kind else []
    if kind and kind not in _METRIC_WORDS:
        # "the Dice model" could be a question about Dice; "the Tversky model" cannot.
        out += [f"{kind} model", f"{kind} variant", f"{kind} one", f"the {kind} one"]
    if alpha > beta:
        out += ["weights false positives", "weighting false positives", "penalises false positives",
                "penalizes false positives", "punishes false positives", "fewer false positives",
                "avoids false positives", "conservative model", "the conservative one", "precision-leaning",
                "precision-oriented", "precision-focused", "high-precision model", "false-positive-averse"]
    elif beta > alpha:
        out += ["weights false negatives", "weighting false negatives", "penalises false negatives",
                "penalizes false negatives", "punishes false negatives", "fewer false negatives",
                "avoids missed lesions", "misses fewer lesions", "sensitive model", "the sensitive one",
                "recall-leaning", "recall-oriented", "recall-focused", "high-recall model", "liberal model"]
    elif kind == "dice":
        out += ["plain dice loss", "the middle one", "middle model", "middle variant"]
    return out


def _model_phrases(ref: ModelRef, n_models: int) -> list[str]:
    name = normalise(ref.name)
    out = [name] + [f"{name} {u}" for u in _UNIT_WORDS] + [f"the {name} {u}" for u in _UNIT_WORDS]
    first = name.split(" ")[0].split("-")[0]
    if first != name:
        out += [f"{first}-optimized", f"{first} optimized", f"{first} model",
                f"{first} variant", f"the {first} one", f"{first}-oriented model", f"{first}-focused model",
                f"optimized for {first}", f"{first}-tuned model"]
    n = ref.number
    for u in ("model", "variant", "network", "net"):
        out += [f"{u} {n}", f"{u} #{n}", f"{u} no. {n}", f"{u} number {n}", f"{u}{n}", f"#{n} {u}"]
        if n <= len(NUMBER_WORDS):
            out.append(f"{u} {NUMBER_WORDS[n - 1]}")
    if n <= len(ORDINALS):
        o = ORDINALS[n - 1]
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n, "th")
        out += [f"{o} {u}" for u in ("model", "variant", "network", "one")]
        out += [f"the {o} {u}" for u in ("model", "variant", "network", "one")]
        out += [f"{n}{suffix} model", f"{n}{suffix} variant", f"the {n}{suffix} model", f"the {n}{suffix} variant"]
    if n == n_models and n > 1:
        out += ["last model", "the last model", "last variant", "the last one", "final model"]
    return out + _loss_phrases(ref)


@dataclass
class Vocabulary:
    """Canonical value -> the phrases naming it, per field of an intent."""

    catalog: Catalog
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name or ALL_MODELS
    metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)  # metric, unstored, or ?unsupported
    aggregates: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(AGGREGATE_PHRASES))
    ranked_units: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(RANKED_UNIT_PHRASES))
    change: tuple[str, ...] = ()  # the change since the previous version, with its name ("since v001")

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> "Vocabulary":
        v = cls(catalog)
        seen: dict[str, str] = {}
        per_model: dict[str, list[str]] = {}
        for ref in catalog.models:
            for p in _model_phrases(ref, len(catalog.models)):
                for s in spellings(p):
                    # A phrase two models share ("tversky loss" for two Tversky variants) names neither.
                    if s in seen and seen[s] != ref.name:
                        seen[s] = ""
                    else:
                        seen.setdefault(s, ref.name)
                    per_model.setdefault(ref.name, []).append(s)
        for name, phrases in per_model.items():
            v.models[name] = tuple(dict.fromkeys(p for p in phrases if seen.get(p) == name))
        v.models[ALL_MODELS] = tuple(dict.fromkeys(s for p in ALL_MODEL_PHRASES for s in spellings(p)))
        for m in REGISTRY.values():
            if m.name not in (*ASKABLE_IMAGE_METRICS, *ASKABLE_DATASET_METRICS) and not m.same_as:
                continue
            key = m.same_as or m.name
            phrases = [*m.synonyms, m.label, m.phrase, m.name.replace("_", " ")]
            v.metrics[key] = tuple(dict.fromkeys(v.metrics.get(key, ()) + tuple(s for p in phrases for s in spellings(p))))
        if catalog.against:
            n = int(catalog.against.lstrip("v"))
            versions = (catalog.against, f"v{n}", f"version {n}", f"version {catalog.against}")
            named = [f"{w} {x}" for x in versions for w in ("since", "compared with", "compared to", "than", "vs",
                                                             "versus", "from")]
            v.change = tuple(dict.fromkeys(s for p in (*named, *versions, *CHANGE_PHRASES) for s in spellings(p)))
        else:
            v.change = tuple(dict.fromkeys(s for p in CHANGE_PHRASES for s in spellings(p)))
        for name, phrases in UNSUPPORTED_METRICS.items():
            v.metrics[UNSUPPORTED_PREFIX + name] = tuple(dict.fromkeys(s for p in phrases for s in spellings(p)))
        return v

    def metric_is_stored(self, key: str) -> bool:
        return key in self.catalog.metrics

    @staticmethod
    def phrase_index(choices: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
        """(phrase, value) pairs, longest phrase first: the order a matcher must try them in."""
        pairs = {(p, k) for k, ps in choices.items() for p in ps}
        return sorted(pairs, key=lambda pk: (-len(pk[0]), pk[0], pk[1]))


def vocabulary_of(catalog: Catalog) -> Vocabulary:
    """The vocabulary of ``catalog``, built once and kept on it."""
    vocab = catalog.__dict__.get("_vocabulary")
    if vocab is None:
        vocab = catalog.__dict__["_vocabulary"] = Vocabulary.from_catalog(catalog)
    return vocab
