"""An auxiliary training objective: CTC over the characters of the intent corpus's transcripts.

Skit-S2I gives each recording the sentence its speaker read (``template``), so the
encoder can be taught *what was said* as well as which intent it was: a linear layer
over the encoder's last hidden state, trained with CTC to spell the transcript, as
SpeechBrain's direct SLU recipes add an ASR loss to the intent loss. The spelling
targets do not change with the speaker's pitch, rate or mood, so they push the encoder
towards the words under the prosody. The layer is for training only: it is not
exported, and the model predicts intent and emotion as before.

Rows without a transcript (the emotion corpus, whose sentence codes are not text)
take no part in this loss. ``ctc_weight`` in the recipe's YAML turns it on (0: no CTC
layer at all).

Example
-------
>>> tokens("Block my card, now!")
[3, 13, 16, 4, 12, 1, 14, 26, 1, 4, 2, 19, 5, 1, 15, 16, 24]
>>> spelled(tokens("Block my card, now!"))
'block my card now'
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

BLANK = 0
# Index 0 is CTC's blank; then space, the letters, digits and the apostrophe.
SYMBOLS = ("<blank>", " ", *"abcdefghijklmnopqrstuvwxyz", *"0123456789", "'")
_INDEX = {symbol: index for index, symbol in enumerate(SYMBOLS)}


def tokens(text: str) -> list[int]:
    """Character indices of ``text``: lower-cased, other characters as spaces, spaces collapsed."""
    kept = re.sub(r"[^a-z0-9' ]+", " ", (text or "").lower())
    return [_INDEX[c] for c in " ".join(kept.split())]


def row_targets(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, length)`` of one row for a batch: a row without a transcript gets one
    blank of length 0, so that a batch with no transcript still pads to a width of 1.

    >>> row_targets("No")
    (tensor([15, 16]), tensor(2))
    >>> row_targets("")
    (tensor([0]), tensor(0))
    """
    indices = tokens(text)
    return torch.tensor(indices or [BLANK], dtype=torch.long), torch.tensor(len(indices))


def spelled(indices) -> str:
    """The text of ``indices`` (blanks dropped; no CTC collapsing)."""
    return "".join(SYMBOLS[int(i)] for i in indices if int(i) != BLANK)


class CTCHead(nn.Module):
    """Per-frame character logits from the encoder's last hidden state.

    >>> head = CTCHead(input_size=8)
    >>> head(torch.randn(3, 2, 10, 8)).shape        # [layers, batch, frames, dim]
    torch.Size([2, 10, 39])
    """

    def __init__(self, input_size: int):
        super().__init__()
        self.output = nn.Linear(input_size, len(SYMBOLS))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(hidden_states[-1])


def ctc_loss_sum(logits: torch.Tensor, frame_lens: torch.Tensor, targets: torch.Tensor,
                 target_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed per-character CTC loss over the rows with a transcript, and their count.

    ``targets [batch, max_len]`` are padded token indices, ``target_lens`` their lengths
    (0: no transcript). Each row's loss is divided by its length, so long and short
    sentences count alike. With no transcript in the batch the sum is a zero that still
    belongs to the graph (every process of a data-parallel run then reduces the same
    parameters). A row too short for its transcript gives no loss (``zero_infinity``).

    >>> logits = torch.zeros(2, 6, len(SYMBOLS), requires_grad=True)
    >>> total, count = ctc_loss_sum(logits, torch.tensor([6, 6]),
    ...                             torch.tensor([[3, 13], [0, 0]]), torch.tensor([2, 0]))
    >>> int(count), round(float(total.detach()), 3)
    (1, 8.866)
    """
    has_text = target_lens > 0
    count = has_text.sum()
    if not bool(has_text.any()):
        return logits.sum() * 0.0, count
    log_probs = F.log_softmax(logits[has_text].float(), dim=-1).transpose(0, 1)
    lens = target_lens[has_text]
    per_row = F.ctc_loss(log_probs, targets[has_text], frame_lens[has_text], lens,
                         blank=BLANK, reduction="none", zero_infinity=True)
    return (per_row / lens.to(per_row.dtype)).sum(), count
