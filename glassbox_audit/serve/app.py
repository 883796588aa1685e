"""The review workstation: a local web application over an audits folder.

Pages (all server-rendered with the project's Jinja templates, autoescaped; a little script
for keyboard shortcuts and explanations on demand):

* ``/``: every audit, its versions, their verify status and review decisions;
* ``/audits/<audit>``: one audit's versions with their change logs;
* ``/audits/<audit>/<version>``: the summary, acceptance, and the table of every test image
  (sortable by any variant's Dice, IoU or error shares; failures only, flagged only, one
  batch; paged), and the review form;
* ``/audits/<audit>/<version>/images/<id>``: the image, its ground truth and each variant's
  error overlay and probability map, explanations on demand, flags; ``j``/``k`` (or the arrow
  keys) step through the current sort.

Writes: flags are drafts beside the audits (:mod:`.drafts`) until a decision is submitted,
which records a new version through :func:`glassbox_audit.review.review_version`, the code
path of ``glassbox-audit review``. Sealed versions are never written. Every form carries a
CSRF token (asgi-csrf, double-submit cookie signed with a secret kept beside the drafts).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import GlassBoxError
from ..metrics import REGISTRY
from ..report.overlays import ERROR_COLOURS, ERROR_LABELS, GROUND_TRUTH_COLOUR
from ..report.render import default_templates, environment
from ..review import DECISIONS, review_version
from .drafts import DRAFTS, FLAG_LABELS, Drafts, flag_text, split_flags
from .library import SORT_COLUMNS, Library, NotFound
from .pictures import Unavailable, VersionPictures, png_bytes

__all__ = ["create_app", "TEMPLATES"]

log = logging.getLogger(__name__)

TEMPLATES = default_templates() / "serve"
PER_PAGE = 50
COLUMN_LABELS = {name: REGISTRY[name].short or REGISTRY[name].label for name in SORT_COLUMNS}
_PICTURES_KEPT = 64  # rendered explanation pictures kept in memory


def _secret(audits_dir: Path) -> str:
    """The CSRF signing secret, made once and kept (owner-only) beside the drafts, so a
    restarted server accepts the forms a reviewer still has open."""
    path = audits_dir / DRAFTS.parent / "csrf-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value


class Workstation:
    """State shared by the handlers: the library, drafts, loaded versions, rendered maps."""

    def __init__(self, audits_dir: Path, cache_dir: str | None, pdf: bool):
        self.audits_dir = Path(audits_dir)
        self.library = Library(audits_dir)
        self.drafts = Drafts(audits_dir)
        self.cache_dir = cache_dir
        self.pdf = pdf
        self.env = environment(TEMPLATES)
        self.env.globals.update(column_labels=COLUMN_LABELS, sort_columns=SORT_COLUMNS, flag_labels=FLAG_LABELS,
                                decisions=DECISIONS, error_colours=ERROR_COLOURS, error_labels=ERROR_LABELS,
                                truth_colour=GROUND_TRUTH_COLOUR)
        self._lock = threading.Lock()
        self._pictures: dict[Path, VersionPictures] = {}
        self._rendered: OrderedDict[str, bytes] = OrderedDict()
        self._submitting: set[tuple[str, str]] = set()

    def page(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        token = request.scope.get("csrftoken")
        html = self.env.get_template(name).render(csrftoken=token() if token else "", request=request, **context)
        return HTMLResponse(html, status_code=status)

    def pictures(self, folder: Path) -> VersionPictures:
        with self._lock:
            if folder not in self._pictures:
                self._pictures[folder] = VersionPictures(folder, self.cache_dir)
            return self._pictures[folder]

    def keep_picture(self, png: bytes) -> str:
        token = hashlib.sha256(png).hexdigest()[:32]
        with self._lock:
            self._rendered[token] = png
            self._rendered.move_to_end(token)
            while len(self._rendered) > _PICTURES_KEPT:
                self._rendered.popitem(last=False)
        return token

    def picture(self, token: str) -> bytes | None:
        with self._lock:
            return self._rendered.get(token)


# --- the table's query string -----------------------------------------------------------------


def _view_args(request: Request) -> dict:
    """Sort, direction, filter and batch from the query string, checked (bad values: 404)."""
    q = request.query_params
    sort = q.get("sort", "image")
    descending = q.get("desc", "0") == "1"
    only = q.get("only", "")
    if only not in ("", "failures", "flagged"):
        raise NotFound(f"unknown filter {only!r}")
    batch = q.get("batch", "")
    if batch and not batch.isdigit():
        raise NotFound(f"batch {batch!r} is not a number")
    per = q.get("per", "")
    return {"sort": sort, "descending": descending, "only": only, "batch": int(batch) if batch else None,
            "per": int(per) if per.isdigit() else None}


def _query(args: dict, **extra) -> str:
    params = {"sort": args["sort"], "desc": "1" if args["descending"] else "0"}
    if args.get("per"):
        params["per"] = str(args["per"])
    if args["only"]:
        params["only"] = args["only"]
    if args["batch"] is not None:
        params["batch"] = str(args["batch"])
    params.update({k: str(v) for k, v in extra.items()})
    return urlencode(params)


# --- handlers ---------------------------------------------------------------------------------


def create_app(audits_dir: str | Path = "audits", cache_dir: str | None = None, pdf: bool = True,
               signing_secret: str | None = None):
    """The workstation as an ASGI application (CSRF-protected)."""
    from asgi_csrf import asgi_csrf

    audits_dir = Path(audits_dir)
    if not audits_dir.is_dir():
        raise GlassBoxError(f"{audits_dir}: no audits folder here (run an audit first, or pass --audits-dir)")
    ws = Workstation(audits_dir, cache_dir, pdf)

    def index(request: Request):
        return ws.page(request, "index.html.j2", audits=ws.library.audits())

    def audit_page(request: Request):
        return ws.page(request, "audit.html.j2", audit=ws.library.audit(request.path_params["audit"]))

    def version_page(request: Request, error: str = "", status: int = 200, form: dict | None = None):
        audit, version = request.path_params["audit"], request.path_params["version"]
        entry = ws.library.version(audit, version)
        table = ws.library.table(audit, version)
        args = _view_args(request)
        flagged = ws.drafts.flagged(audit, version)
        order = _order(table, args, flagged)
        page = table.page(order, _int(request.query_params.get("page"), 1), args["per"] or PER_PAGE, flagged)
        return ws.page(request, "version.html.j2", status=status, audit=audit, entry=entry,
                       summary=ws.library.summary(audit, version), table=table, page=page, args=args,
                       query=lambda **kw: _query(args, **kw), drafts=ws.drafts.version(audit, version),
                       error=error, form=form or {})

    def image_page(request: Request):
        audit, version = request.path_params["audit"], request.path_params["version"]
        image_id = request.path_params["image_id"]
        folder = ws.library.version_dir(audit, version)
        record = ws.library.image(audit, version, image_id)
        table = ws.library.table(audit, version)
        args = _view_args(request)
        flagged = ws.drafts.flagged(audit, version)
        order = _order(table, args, flagged)
        prev, nxt, position = table.neighbours(order, image_id)
        pics = ws.pictures(folder)
        problem, view = "", None
        try:
            view = pics.image(image_id, record["batch_index"], _stored_counts(record))
        except Unavailable as exc:
            problem = str(exc)
        drafts = ws.drafts.image(audit, version, image_id)
        chosen, comment = split_flags(drafts)
        return ws.page(request, "image.html.j2", audit=audit, version=version, image_id=image_id, record=record,
                       variants=pics.variants, view=view, problem=problem, prev=prev, next=nxt, position=position,
                       total=len(order), query=_query(args),
                       sort_label=_sort_label(args, table.variants),
                       drafts=drafts, chosen=chosen, comment=comment,
                       methods=_methods(pics))

    def picture(request: Request):
        audit, version = request.path_params["audit"], request.path_params["version"]
        image_id, kind = request.path_params["image_id"], request.path_params["kind"]
        folder = ws.library.version_dir(audit, version)
        record = ws.library.image(audit, version, image_id)
        pics = ws.pictures(folder)
        try:
            view = pics.image(image_id, record["batch_index"], _stored_counts(record))
        except Unavailable as exc:
            raise HTTPException(503, str(exc)) from None
        return Response(png_bytes(_panel(view, pics.variants, kind)), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    def explain(request: Request):
        from ..xai.figures import TITLES, heat_overlay, params_line

        audit, version = request.path_params["audit"], request.path_params["version"]
        image_id = request.path_params["image_id"]
        method, variant = request.query_params.get("method", ""), request.query_params.get("variant", "")
        folder = ws.library.version_dir(audit, version)
        record = ws.library.image(audit, version, image_id)
        pics = ws.pictures(folder)
        if method not in _methods(pics) or variant not in pics.variants:
            return JSONResponse({"error": f"unknown method {method!r} or variant {variant!r}"}, status_code=400)
        try:
            view = pics.image(image_id, record["batch_index"], _stored_counts(record))
            result = pics.explain(view, method, variant)
        except Unavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        maps = []
        for key, m in result.maps.items():
            token = ws.keep_picture(png_bytes(heat_overlay(view.image, m, result.kinds[key])))
            maps.append({"key": key, "title": TITLES.get(key, key), "src": f"/explanations/{token}.png",
                         "params": params_line(result.params[key]), "scale": result.kinds[key]})
        return JSONResponse({"method": method, "variant": variant, "maps": maps, "checks": result.checks,
                             "notes": result.notes, "cached": result.cached, "seconds": round(result.seconds, 2)})

    def explanation_png(request: Request):
        png = ws.picture(request.path_params["token"])
        if png is None:
            raise HTTPException(404, "explanation picture expired: ask for the explanation again")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def set_flags(request: Request):
        audit, version = request.path_params["audit"], request.path_params["version"]
        image_id = request.path_params["image_id"]
        ws.library.image(audit, version, image_id)  # 404 for an image the version does not hold
        form = await request.form()
        labels = [v for v in form.getlist("flag") if isinstance(v, str)]
        comment = str(form.get("comment", ""))
        try:
            flags = [flag_text(label, comment) for label in labels]
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if comment.strip() and not labels:
            flags = [flag_text("other", comment)]
        await run_in_threadpool(ws.drafts.set_image, audit, version, image_id, flags)
        back = str(form.get("back", ""))
        query = urlencode({k: v for k, v in _parse_back(back).items()})
        return RedirectResponse(f"/audits/{audit}/{version}/images/{image_id}" + (f"?{query}" if query else ""),
                                status_code=303)

    async def submit_review(request: Request):
        audit, version = request.path_params["audit"], request.path_params["version"]
        folder = ws.library.version_dir(audit, version)
        form = await request.form()
        reviewer, decision = str(form.get("reviewer", "")).strip(), str(form.get("decision", ""))
        note = str(form.get("note", ""))
        values = {"reviewer": reviewer, "decision": decision, "note": note}
        key = (audit, version)
        with ws._lock:
            busy = key in ws._submitting
            ws._submitting.add(key)
        if busy:
            return await run_in_threadpool(version_page, request, "a review of this version is being recorded; "
                                           "wait for it to finish", 409, values)
        try:
            flags = ws.drafts.version(audit, version)
            new = await run_in_threadpool(review_version, ws.audits_dir, audit, folder, reviewer, decision, note,
                                          flags, ws.pdf)
        except GlassBoxError as exc:
            return await run_in_threadpool(version_page, request, str(exc), 400, values)
        finally:
            with ws._lock:
                ws._submitting.discard(key)
        ws.drafts.clear(audit, version)
        return RedirectResponse(f"/audits/{audit}/{new.name}?recorded={version}", status_code=303)

    def file_in_version(request: Request):
        """The sealed dossier and figures, read-only, from inside the version folder only."""
        from starlette.responses import FileResponse

        folder = ws.library.version_dir(request.path_params["audit"], request.path_params["version"])
        target = (folder / request.path_params["path"]).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise HTTPException(404, "no such file in this version")
        return FileResponse(target)

    def not_found(request: Request, exc: Exception):
        return ws.page(request, "error.html.j2", status=404, message=str(exc))

    def http_error(request: Request, exc: HTTPException):
        return ws.page(request, "error.html.j2", status=exc.status_code, message=str(exc.detail))

    v = "/audits/{audit}/{version}"
    routes = [
        Route("/", index),
        Route("/audits/{audit}", audit_page),
        Route(v, version_page),
        Route(v + "/review", submit_review, methods=["POST"]),
        Route(v + "/files/{path:path}", file_in_version),
        Route(v + "/images/{image_id}", image_page),
        Route(v + "/images/{image_id}/flags", set_flags, methods=["POST"]),
        Route(v + "/images/{image_id}/picture/{kind}.png", picture),
        Route(v + "/images/{image_id}/explain", explain),
        Route("/explanations/{token}.png", explanation_png),
        Mount("/static", StaticFiles(directory=TEMPLATES / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={NotFound: not_found, HTTPException: http_error})
    app.state.workstation = ws
    return asgi_csrf(app, signing_secret=signing_secret or _secret(audits_dir), always_set_cookie=True)


def _parse_back(back: str) -> dict:
    """The table view a flag form came from, keeping only the keys the table understands."""
    from urllib.parse import parse_qsl

    allowed = {"sort", "desc", "only", "batch"}
    return {k: v for k, v in parse_qsl(back.lstrip("?")) if k in allowed}


def _sort_label(args: dict, variants: list[str]) -> str:
    column, _, k = args["sort"].partition(":")
    text = {"image": "image id", "batch": "batch"}.get(column) or f"{variants[int(k)]} {COLUMN_LABELS[column]}"
    return text + (", descending" if args["descending"] else "")


def _order(table, args: dict, flagged: frozenset[str]) -> np.ndarray:
    return table.order(args["sort"], args["descending"], args["only"], args["batch"], flagged)


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


def _stored_counts(record: dict) -> dict[str, tuple[int, int, int, int]]:
    return {r["model_name"]: (r["tp"], r["fp"], r["fn"], r["tn"]) for r in record["rows"]}


def _methods(pics: VersionPictures) -> list[str]:
    from ..xai.settings import METHODS

    configured = [m for m in pics.cfg.xai.methods if m in METHODS]
    return configured or list(METHODS)


def _panel(view, variants: list[str], kind: str) -> np.ndarray:
    """One picture of the image page: ``image``, ``truth``, ``error-<k>`` or ``prob-<k>``."""
    from ..report.grid import colour_map
    from ..report.overlays import PROBABILITY_CMAP, error_overlay, mask_overlay

    if kind == "image":
        return view.image
    if kind == "truth":
        return mask_overlay(view.image, view.mask, GROUND_TRUTH_COLOUR)
    what, _, k = kind.partition("-")
    if what in ("error", "prob") and k.isdigit() and int(k) < len(variants):
        name = variants[int(k)]
        if what == "error":
            return error_overlay(view.image, view.mask, view.preds[name])
        return colour_map(view.probs[name], PROBABILITY_CMAP, 0.0, 1.0)[..., :3]
    raise NotFound(f"no picture {kind!r}")
