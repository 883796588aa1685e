"""The grammar the LLM writes under: a JSON intent whose every choice is a real name.

Enumerations come from the run's :class:`~.catalog.Catalog`: its model names (or ``"all"``),
metric names, batch ids and image ids. The model cannot write SQL, invent a model or a batch,
or say anything but one intent object. :func:`intent_gbnf` gives llama.cpp's GBNF with fixed
spacing (fewer free tokens for a small model to get wrong); :func:`intent_schema` the same
language as JSON Schema, for documentation and for checking an output independently.

Example::

    {"metrics": ["recall"], "aggregate": "max", "models": ["all"], "scope": "dataset", "batch": null, "image": null}
"""

from __future__ import annotations

import json
import re
from typing import Any

from .catalog import Catalog
from .intent import AGGREGATES, SCOPES

__all__ = ["FIELD_ORDER", "MAX_LISTED_IMAGES", "in_language", "intent_gbnf", "intent_schema", "spelling"]

FIELD_ORDER = ("metrics", "aggregate", "models", "scope", "batch", "image")
# Above this many test images the grammar takes any id-shaped string and the answer checks it.
MAX_LISTED_IMAGES = 1000
_MAX_ITEMS = 4  # metrics or models in one question


def _lit(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alts(values: list[str]) -> str:
    return " | ".join(_lit(v) for v in values)


def intent_gbnf(catalog: Catalog) -> str:
    models = [json.dumps(m) for m in catalog.model_names]
    metrics = [json.dumps(m) for m in catalog.metrics]
    batches = [str(b) for b in catalog.batches]
    lines = [
        'root ::= "{" ' + ' ", " '.join(f'{_lit(json.dumps(f) + ": ")} {f}' for f in FIELD_ORDER) + ' "}"',
        f'metrics ::= "[" metric (", " metric){{0,{_MAX_ITEMS - 1}}} "]"',
        f"metric ::= {_alts(metrics)}",
        f"aggregate ::= {_alts([json.dumps(a) for a in AGGREGATES])}",
        f'models ::= "[\\"all\\"]" | "[" model (", " model){{0,{_MAX_ITEMS - 1}}} "]"',
        f"model ::= {_alts(models)}",
        f"scope ::= {_alts([json.dumps(s) for s in SCOPES])}",
        "batch ::= " + " | ".join(['"null"', *(_lit(b) for b in batches)]),
    ]
    if len(catalog.images) <= MAX_LISTED_IMAGES:
        lines.append("image ::= " + " | ".join(['"null"', *(_lit(json.dumps(i)) for i in catalog.images)]))
    else:
        lines.append('image ::= "null" | "\\"" [A-Za-z0-9_-] [A-Za-z0-9_.-]{0,63} "\\""')
    return "\n".join(lines) + "\n"


def intent_schema(catalog: Catalog) -> dict[str, Any]:
    """JSON Schema of the intent (patterns use ``[.]``, never an escaped dot: llama.cpp's
    schema converter crashes on ``\\.``)."""
    image: dict[str, Any]
    if len(catalog.images) <= MAX_LISTED_IMAGES:
        image = {"enum": [None, *catalog.images]}
    else:
        image = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"}]}
    return {
        "type": "object",
        "properties": {
            "metrics": {"type": "array", "items": {"enum": catalog.metrics}, "minItems": 1, "maxItems": _MAX_ITEMS},
            "aggregate": {"enum": list(AGGREGATES)},
            "models": {"anyOf": [{"const": ["all"]},
                                 {"type": "array", "items": {"enum": catalog.model_names}, "minItems": 1,
                                  "maxItems": _MAX_ITEMS}]},
            "scope": {"enum": list(SCOPES)},
            "batch": {"enum": [None, *catalog.batches]},
            "image": image,
        },
        "required": list(FIELD_ORDER),
        "additionalProperties": False,
    }


_IMAGE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def in_language(text: str, catalog: Catalog) -> bool:
    """Whether ``text`` is a complete sentence of :func:`intent_gbnf`'s language, spelled exactly.

    Greedy decoding under the grammar picks, at each step, the likeliest token the grammar
    allows. When the unconstrained greedy output is itself a sentence of the language, every
    one of its tokens was allowed where it was picked, so the constrained decoding would have
    produced the same text; :meth:`~.runtime.LocalLLM.complete` then skips the grammar, whose
    check of the whole vocabulary at every token costs far more than the model itself.
    This check may refuse more than the grammar (that only costs a constrained retry) but must
    never accept less strictly.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict) or list(data) != list(FIELD_ORDER):
        return False
    metrics, aggregate, models, scope, batch, image = (data[f] for f in FIELD_ORDER)
    if not (isinstance(metrics, list) and 1 <= len(metrics) <= _MAX_ITEMS
            and all(isinstance(m, str) and m in catalog.metrics for m in metrics)):
        return False
    if not (isinstance(aggregate, str) and aggregate in AGGREGATES and isinstance(scope, str) and scope in SCOPES):
        return False
    if models != ["all"] and not (isinstance(models, list) and 1 <= len(models) <= _MAX_ITEMS
                                  and all(isinstance(m, str) and m in catalog.model_names for m in models)):
        return False
    if batch is not None and not (type(batch) is int and batch in catalog.batches):
        return False
    if image is not None:
        if not isinstance(image, str):
            return False
        if len(catalog.images) <= MAX_LISTED_IMAGES and image not in catalog.images:
            return False
        if len(catalog.images) > MAX_LISTED_IMAGES and not _IMAGE_ID.fullmatch(image):
            return False
    # The grammar fixes every space and the order of the fields: the text must be the one
    # spelling of these values.
    return spelling(data) == text


def spelling(values: dict[str, Any]) -> str:
    """The one text the grammar allows for these field values: fixed field order, ", " and ": "
    between items (``json.dumps``' own separators, and its escapes, as in the grammar's literals)."""
    return "{" + ", ".join(f"{json.dumps(f)}: {json.dumps(values[f])}" for f in FIELD_ORDER) + "}"
