"""GlassBox Audit: audit packs for binary medical image segmentation models.

Research use only; not a medical device.
"""

import os

# TensorFlow's C++ start-up chatter is not for audit logs; real errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from .config import AuditConfig, load_config  # noqa: E402
from .errors import GlassBoxError  # noqa: E402


def run_audit(cfg: AuditConfig, command: str = "glassbox_audit.run_audit()", executor=None):
    """Run a complete audit; see :func:`glassbox_audit.pipeline.run_audit`."""
    from .pipeline import run_audit as _run

    return _run(cfg, command, executor)


__all__ = ["AuditConfig", "GlassBoxError", "load_config", "run_audit", "__version__"]
