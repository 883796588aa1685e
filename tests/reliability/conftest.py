"""One sandbox for the whole battery: the tiny model trained once, an audit with v001 and v002.

Every case snapshots the audits before it acts and checks them after, so cases share the
sandbox without depending on each other's order.
"""

import pytest

from .battery import Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("reliability"))
    sb.prepare()
    return sb
