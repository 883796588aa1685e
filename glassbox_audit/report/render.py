"""The dossier: HTML and PDF rendered from the run database alone.

``render_dossier`` reads everything it shows from the version's database (numbers, cards,
hashes, statements) and the figure files the run recorded as artifacts (:mod:`.context`),
renders the Jinja template with autoescaping on, and prints the HTML to PDF with WeasyPrint.
It imports neither the models nor TensorFlow, so a stored version can be re-rendered without
recomputing anything, with the templates the run used.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jinja2

from ..store import DATABASE, AuditStore
from .context import REPORT_KINDS, RenderedFile, build_context

__all__ = ["JPEG_QUALITY", "PHOTOGRAPHIC_KINDS", "default_templates", "environment", "jpeg_bytes", "render_dossier",
           "rerender", "run_templates", "write_pdf"]

log = logging.getLogger(__name__)


def default_templates() -> Path:
    """The ``templates/`` folder beside the package (the project's top level)."""
    return Path(__file__).resolve().parents[2] / "templates"


def run_templates(config: dict) -> Path:
    """The templates a run was rendered with: its ``report.templates``, else the default ones."""
    chosen = config.get("report", {}).get("templates") or ""
    return Path(chosen) if chosen else default_templates()


def _signed(v, d: int = 4) -> str:
    return "n/a" if v is None or v != v else f"{v:+.{d}f}"


def environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v, d=1: "n/a" if v is None or v != v else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=4: "n/a" if v is None or v != v else f"{v:.{d}f}"
    env.filters["thousands"] = lambda v: f"{int(v):,}"
    env.filters["short"] = lambda v, n=12: (v or "")[:n]
    env.filters["ci"] = lambda iv, d=3: "" if not iv else f"[{iv[0]:.{d}f}, {iv[1]:.{d}f}]"
    env.filters["signed"] = _signed
    return env


def _peak_memory_mb() -> float:
    """This process's own peak resident memory, in MB.

    Linux keeps ``ru_maxrss`` across ``exec``, so a renderer spawned from an audit process
    holding TensorFlow would report the audit's size as its own; ``VmHWM`` belongs to the
    process image alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


# Figures drawn from pixels (images under overlays, heat maps) go into the PDF as JPEG: lossless
# PNG of photographic content is most of a dossier's bytes, and at print size a quality-80 JPEG
# is indistinguishable from it. Charts (lines, bars, text on flat colour) stay PNG, where JPEG
# would blur their edges and cost more bytes. The version's own files stay PNG.
PHOTOGRAPHIC_KINDS = ("overlay", "probability", "failure_gallery", "xai", "xai_layers")
JPEG_QUALITY = 80


def jpeg_bytes(path: Path, quality: int = JPEG_QUALITY) -> bytes:
    """A figure file re-encoded as baseline JPEG (alpha flattened on white)."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
        elif im.mode != "RGB":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality, optimize=True, subsampling=0)
        return out.getvalue()


def _fetcher(folder: Path, photographic: frozenset[str], quality: int):
    """WeasyPrint's fetcher, serving the photographic figures of ``folder`` as JPEG, and
    nothing from the network (the dossier references local files only)."""
    from urllib.request import url2pathname

    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class Fetcher(URLFetcher):
        def fetch(self, url, headers=None):
            if url.startswith("file:"):
                path = Path(url2pathname(url.split("?")[0].removeprefix("file:"))).resolve()
                if path.is_relative_to(folder) and path.relative_to(folder).as_posix() in photographic:
                    # Not a file: URL, or WeasyPrint would embed the PNG file's bytes under
                    # the JPEG filter (it reads local files again by path).
                    return URLFetcherResponse(f"glassbox-jpeg:{url}", jpeg_bytes(path, quality),
                                              {"Content-Type": "image/jpeg"})
            return super().fetch(url, headers)

    return Fetcher(allowed_protocols=("file", "data"))


def _pdf_child(html_path: str, pdf_path: str, photographic: tuple[str, ...] = (),
               quality: int = JPEG_QUALITY) -> dict[str, float]:
    import weasyprint

    for noisy in ("weasyprint", "fontTools"):  # CSS it skips is not news for the audit log
        logging.getLogger(noisy).setLevel(logging.ERROR)

    t0 = time.perf_counter()
    folder = Path(html_path).parent.resolve()
    weasyprint.HTML(filename=html_path, base_url=str(folder),
                    url_fetcher=_fetcher(folder, frozenset(photographic), quality)).write_pdf(pdf_path)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_memory_mb()}


def write_pdf(html_path: Path, pdf_path: Path, photographic: tuple[str, ...] | list[str] = (),
              quality: int = JPEG_QUALITY) -> dict[str, float]:
    """Print the HTML to PDF with WeasyPrint in a child process; ``photographic`` figures
    (paths relative to the HTML's folder) are embedded as JPEG of ``quality``.

    WeasyPrint holds the whole document in memory (and large runs reach gigabytes); in a
    child, that memory is returned to the system when the page is done, the audit process
    stays small, and the child's peak memory can be measured and logged. The child is
    spawned, not forked, because forking a process that runs TensorFlow threads is unsafe.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pdf_child, str(html_path), str(pdf_path), tuple(photographic), quality).result()


def render_dossier(db_path: Path, folder: Path, templates: Path | None = None, pdf: bool = True,
                   dpi: int = 110, max_listed_files: int = 200, questions_path: Path | None = None
                   ) -> list[RenderedFile]:
    """Render ``dossier.html`` (and ``dossier.pdf``) into ``folder`` from ``db_path``.

    ``templates``: the folder of ``dossier.html.j2``; None: the run's own (``report.templates``
    as the run recorded it, else the default ones).

    ``questions_path``: the audit's log of questions asked after sealing (``ask``), shown in
    the LLM appendix beside the questions the run answered itself.
    """
    from ..llm import appendix_context

    with AuditStore(db_path, readonly=True) as store:
        templates = Path(templates) if templates else run_templates(store.run()["config"])
        context, written = build_context(store, folder, dpi, max_listed_files)
        photographic = [a["path"] for a in store.artifacts(store.run()["id"]) if a["kind"] in PHOTOGRAPHIC_KINDS]
    context.update(appendix_context(db_path, questions_path if questions_path and Path(questions_path).is_file()
                                    else None))
    env = environment(templates)
    html = env.get_template("dossier.html.j2").render(**context)
    html_path = folder / "dossier.html"
    html_path.write_text(html, encoding="utf-8")
    written.append(RenderedFile(html_path, "dossier-html", "Audit dossier (HTML)"))
    if pdf:
        pdf_path = folder / "dossier.pdf"
        stats = write_pdf(html_path, pdf_path, photographic)
        log.info("report: PDF written in %.1f s, renderer peak memory %.0f MB", stats["seconds"], stats["peak_mb"])
        written.append(RenderedFile(pdf_path, "dossier-pdf", "Audit dossier (PDF)"))
    return written


def rerender(version: Path, output: Path, templates: Path | None = None, pdf: bool = True
             ) -> list[RenderedFile]:
    """Render a stored version again into ``output`` from its database alone.

    The version folder is only read: its database opens read-only, and the figures drawn
    from images (overlays) are copied, since the database holds their hashes, not pixels.
    Figure resolution and listing limits come from the run's stored configuration.
    """
    import shutil

    version, output = Path(version), Path(output)
    db_path = version / DATABASE
    output.mkdir(parents=True, exist_ok=False)
    with AuditStore(db_path, readonly=True) as store:
        report_cfg = store.run()["config"]["report"]
        for a in store.artifacts(store.run()["id"]):
            if a["kind"] not in REPORT_KINDS:  # drawn from pixels by the run, not from the database
                (output / a["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(version / a["path"], output / a["path"])
    from ..llm import QUESTIONS_DB

    return render_dossier(db_path, output, templates, pdf, report_cfg["figure_dpi"],
                          report_cfg["max_listed_files"], questions_path=version.parent / QUESTIONS_DB)
