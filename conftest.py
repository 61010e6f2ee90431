"""Keeps the test run's scratch files in pytest's own temporary folder.

The doctests make folders with plain ``tempfile.mkdtemp()``, as a user would, and
``accelerate launch`` leaves Torch Elastic's folders behind; left in the system's
``/tmp``, every ``make test`` added about thirty folders there that nothing removed.
Pointed into pytest's base folder (which pytest prunes to its last three runs), they go
when it goes. The folder's name is short on purpose: sockets made in ``$TMPDIR`` must fit
in 108 bytes.
"""

import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def scratch_in_pytest_basetemp(tmp_path_factory):
    scratch = str(tmp_path_factory.mktemp("tmp"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", scratch)
        patch.setenv("TMPDIR", scratch)  # for the processes the tests start
        yield scratch
