"""Dossier PDF size: photographic figures embedded as JPEG (the dossier's choice) against every
figure as lossless PNG (the earlier PDFs), rendered from the same version in the same run.

For each choice: bytes, pages, seconds, and the share of the PDF that is images; then one page
of each (the first explanation grid and the first overlay page) rendered side by side with
``pdftoppm`` into ``build/pdf-pages/`` so the figures can be compared at print size.

    python benchmarks/pdf_size.py                       # the newest version of audits/default
    python benchmarks/pdf_size.py audits/isic2017/v003 --quality 80 --quality 90
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _image_bytes(pdf: Path) -> tuple[int, dict[str, int]]:
    import pypdf

    reader = pypdf.PdfReader(pdf)
    seen, by_filter = set(), {}
    for page in reader.pages:
        for obj in (page["/Resources"].get("/XObject") or {}).values():
            o = obj.get_object()
            if id(o) in seen:
                continue
            seen.add(id(o))
            name = str(o.get("/Filter"))
            by_filter[name] = by_filter.get(name, 0) + len(o._data)
    return len(reader.pages), by_filter


def _page_with(pdf: Path, text: str) -> int | None:
    import pypdf

    for k, page in enumerate(pypdf.PdfReader(pdf).pages, start=1):
        if text in (page.extract_text() or ""):
            return k
    return None


def main() -> None:
    from glassbox_audit.report.render import JPEG_QUALITY, PHOTOGRAPHIC_KINDS, write_pdf
    from glassbox_audit.report.render import rerender
    from glassbox_audit.store import AuditStore

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", nargs="?", type=Path)
    ap.add_argument("--quality", type=int, action="append", help=f"JPEG quality to try (default {JPEG_QUALITY})")
    args = ap.parse_args()
    version = args.version or sorted((REPO / "audits" / "default").glob("v[0-9]*"))[-1]
    qualities = args.quality or [JPEG_QUALITY]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "render"
        rerender(version, work, pdf=False)  # the HTML and the figures, as the version has them
        with AuditStore(version / "audit.sqlite", readonly=True) as store:
            photographic = [a["path"] for a in store.artifacts(store.run()["id"]) if a["kind"] in PHOTOGRAPHIC_KINDS]
        figure_bytes = sum(p.stat().st_size for p in (work / "figures").glob("*"))
        print(f"version {version}: {len(photographic)} photographic figures of "
              f"{len(list((work / 'figures').glob('*')))}, figure files {figure_bytes / 1e6:.1f} MB")
        runs = [("every figure PNG (before)", (), JPEG_QUALITY)] + [
            (f"photographic figures JPEG q{q}", tuple(photographic), q) for q in qualities]
        print("| PDF | MB | pages | seconds | image bytes by filter (MB) | size / before |")
        print("|---|---|---|---|---|---|")
        base = None
        outputs = []
        for label, photos, q in runs:
            pdf = Path(tmp) / f"{len(outputs)}.pdf"
            t0 = time.perf_counter()
            write_pdf(work / "dossier.html", pdf, photos, q)
            seconds = time.perf_counter() - t0
            pages, by_filter = _image_bytes(pdf)
            size = pdf.stat().st_size
            base = base or size
            filters = ", ".join(f"{k.strip('/')} {v / 1e6:.1f}" for k, v in sorted(by_filter.items()))
            print(f"| {label} | {size / 1e6:.1f} | {pages} | {seconds:.0f} | {filters} | {size / base:.2f} |")
            outputs.append(pdf)

        out = REPO / "build" / "pdf-pages"
        out.mkdir(parents=True, exist_ok=True)
        if shutil.which("pdftoppm"):
            for what, text in (("overlays", "each variant's errors"), ("xai", "Integrated gradients")):
                page = _page_with(outputs[0], text)
                if page is None:
                    continue
                for k, pdf in enumerate((outputs[0], outputs[-1])):
                    subprocess.run(["pdftoppm", "-r", "150", "-f", str(page), "-l", str(page), "-png", "-singlefile",
                                    str(pdf), str(out / f"{what}-{'png' if k == 0 else 'jpeg'}")], check=True)
                print(f"page {page} ({what}) rendered at 150 dpi: {out}/{what}-png.png and {what}-jpeg.png")


if __name__ == "__main__":
    main()
