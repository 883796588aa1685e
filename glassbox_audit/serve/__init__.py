"""The review workstation (``glassbox-audit serve``): a local web application where a clinical
reviewer goes through an audit version image by image, asks for explanations, flags images
and records a decision as a new version.

Example::

    import uvicorn
    from glassbox_audit.serve import create_app

    uvicorn.run(create_app("audits"), host="127.0.0.1", port=8765)
"""

from .app import create_app

__all__ = ["create_app"]
