"""What a question may refer to: the run's real model names, metrics, batches and images, and
the version its stored comparison is against.

Read once from an audit database (read-only) and shared by the vocabulary (the candidates
both readers choose from), the parser (what counts as "not found") and the answering SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics import REGISTRY
from ..query import open_readonly, run_query

__all__ = ["ASKABLE_DATASET_METRICS", "ASKABLE_IMAGE_METRICS", "METRIC_LABELS", "Catalog", "ModelRef"]

# What a question may ask for, from the one registry of metrics: the metrics stored per image
# and per batch (micro and macro), less those that are another name of the same number (F1 is
# Dice), and the figures stored for the whole test set only.
ASKABLE_IMAGE_METRICS = tuple(m.name for m in REGISTRY.values() if m.level == "image" and m.same_as is None)
ASKABLE_DATASET_METRICS = tuple(m.name for m in REGISTRY.values()
                                if m.level == "dataset" and m.higher_is_better is not None)
METRIC_LABELS = {m.name: m.phrase for m in REGISTRY.values()}


@dataclass(frozen=True, eq=False)
class ModelRef:
    name: str
    number: int  # 1-based, in the order the run evaluated them (the dossier's order)
    description: str = ""
    loss: dict = field(default_factory=dict)  # the card's loss settings (kind, alpha, beta, ...)


@dataclass
class Catalog:
    """The vocabulary of one run. ``Catalog.load(path)`` reads it from an audit database."""

    path: Path
    run_id: str
    audit: str
    version: int
    models: list[ModelRef]
    metrics: list[str]
    batches: list[int]
    images: list[str]
    # The stored comparison with the previous version ("v001"), None when the run has none, and
    # the metrics it compares (image means, paired image by image).
    against: str | None = None
    compared: list[str] = field(default_factory=list)
    _image_index: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._image_index = {i.lower(): i for i in self.images}

    @classmethod
    def load(cls, path: str | Path, run_id: str | None = None) -> "Catalog":
        with open_readonly(path) as conn:
            def rows(sql: str, params: list | tuple = ()) -> list[dict]:
                return run_query(conn, sql, params).dicts()

            runs = rows("select id, audit_name, version from runs where (? is null or id = ?) "
                        "order by started_at desc limit 1", [run_id, run_id])
            if not runs:
                from ..errors import StoreError

                raise StoreError(f"{path}: no run recorded")
            run = runs[0]
            evals = rows("select e.id, e.model_name, m.card_json from evaluations e "
                         "left join models m on m.sha256 = e.model_sha256 where e.run_id = ? order by e.id",
                         [run["id"]])
            models = []
            for n, e in enumerate(evals, 1):
                try:
                    card = json.loads(e["card_json"] or "{}")
                except ValueError:
                    card = {}
                loss = card.get("loss") if isinstance(card.get("loss"), dict) else {}
                models.append(ModelRef(e["model_name"], n, card.get("description") or "", loss))
            stored = {r["metric"] for r in rows(
                "select distinct m.metric from evaluation_metrics m join evaluations e on e.id = m.evaluation_id "
                "where e.run_id = ?", [run["id"]])}
            metrics = [m for m in (*ASKABLE_IMAGE_METRICS, *ASKABLE_DATASET_METRICS) if m in stored]
            batches = [r["b"] for r in rows(
                "select distinct i.batch_index as b from image_metrics i join evaluations e on e.id = i.evaluation_id "
                "where e.run_id = ? order by b", [run["id"]])]
            images = [r["i"] for r in rows(
                "select distinct i.image_id as i from image_metrics i join evaluations e on e.id = i.evaluation_id "
                "where e.run_id = ? order by i", [run["id"]])]
            compared_rows = rows("select against_version as v, metric from comparisons where run_id = ? "
                                 "order by rowid", [run["id"]])
            against = compared_rows[0]["v"] if compared_rows else None
            compared = list(dict.fromkeys(r["metric"] for r in compared_rows))
        return cls(Path(path), run["id"], run["audit_name"], int(run["version"]), models, metrics, batches, images,
                   against, compared)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def image(self, text: str) -> str | None:
        """The stored image id matching ``text`` (case-insensitive), or None."""
        return self._image_index.get(text.lower())

    def model_by_number(self, number: int) -> str | None:
        return self.models[number - 1].name if 1 <= number <= len(self.models) else None
