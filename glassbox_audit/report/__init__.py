"""The dossier and every figure in it, rendered from stored results only.

* :mod:`.context`: what the dossier shows, read from a run database step by step;
* :mod:`.render`: the HTML (Jinja, autoescaped) and the PDF (WeasyPrint, in a child process);
* :mod:`.charts`: charts drawn from numbers; :mod:`.overlays`: figures drawn from image arrays;
* :mod:`.kit` and :mod:`.grid`: the figure kit they and the explanation figures share.

It imports neither the models nor the XAI code: a sealed version re-renders from its database.

Example::

    from glassbox_audit.report import rerender
    rerender(Path("audits/default/v003"), Path("/tmp/v003-again"))
"""

from .context import DISCLAIMER, REPORT_KINDS, RenderedFile, acceptance_rows, build_context
from .render import default_templates, environment, render_dossier, rerender, run_templates, write_pdf

__all__ = ["DISCLAIMER", "REPORT_KINDS", "RenderedFile", "acceptance_rows", "build_context", "default_templates",
           "environment", "render_dossier", "rerender", "run_templates", "write_pdf"]
