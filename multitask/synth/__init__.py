"""Synthetic banking IVR corpora, generated with pip-installed espeak-ng.

No real corpus can be downloaded here, so this package speaks its own: an intent
corpus in the Skit-S2I layout, an emotion corpus in the CREMA-D layout, a joint test set
with both labels (unseen voices and partly unseen wording), and a few-shot corpus of new
banking intents. See :func:`generate` and the ``DATASHEET.md`` it writes.

Example
-------
>>> import tempfile
>>> paths = generate(tempfile.mkdtemp(), size="tiny", jobs=1, progress=False)
>>> paths["joint_test"].endswith("joint_test.csv")
True
"""

from .cli import add_parser
from .corpus import DEFAULT_SEED, SIZES, generate

__all__ = ["generate", "add_parser", "SIZES", "DEFAULT_SEED"]
