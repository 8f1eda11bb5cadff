"""One-hot encoding of DNA in Enformer's channel order A, C, G, T.

One 256-row lookup table maps every byte: ``A``/``C``/``G``/``T`` (either case) to a unit row,
IUPAC ambiguity codes (what ``bcftools consensus -H 1pIu`` writes for unphased heterozygotes)
to the mean of their bases (``R`` = ½A + ½G, ``B`` = ⅓C + ⅓G + ⅓T), and ``N`` and anything
else to zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ORDER = "ACGT"
"""Channel order (Enformer's)."""

IUPAC = {
    "A": "A", "C": "C", "G": "G", "T": "T",
    "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
    "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG",
}
"""The bases each nucleotide code stands for; N (and every other byte) encodes as zeros."""


def _table() -> np.ndarray:
    table = np.zeros((256, len(ORDER)), np.float32)
    for code, bases in IUPAC.items():
        row = np.zeros(len(ORDER), np.float32)
        row[[ORDER.index(b) for b in bases]] = 1.0 / len(bases)
        table[ord(code)] = table[ord(code.lower())] = row
    table.flags.writeable = False
    return table


TABLE = _table()
"""``TABLE[byte]`` is the one-hot row of that byte, float32 ``[256, 4]``."""

_ROWS = TABLE.view(np.complex128).reshape(256)  # one 16-byte item per row: a fast gather

SequenceLike = bytes | bytearray | memoryview | str


def as_codes(sequences: Sequence[SequenceLike] | SequenceLike | np.ndarray) -> np.ndarray:
    """Sequences of equal length as a uint8 array ``[B, L]`` (one ``bytes``/``str`` → B = 1)."""
    if isinstance(sequences, np.ndarray):
        if sequences.dtype != np.uint8 or sequences.ndim != 2:
            raise ValueError(f"expected uint8 [B, L] codes, got {sequences.dtype} "
                             f"{sequences.shape}")
        return sequences
    if isinstance(sequences, bytes | bytearray | memoryview | str):
        sequences = [sequences]
    raw = [s.encode("ascii") if isinstance(s, str) else bytes(s) for s in sequences]
    lengths = {len(s) for s in raw}
    if len(lengths) > 1:
        raise ValueError(f"sequences differ in length ({sorted(lengths)[:5]}); centre and "
                         "crop them to one length first (centre_on_tss)")
    length = lengths.pop() if lengths else 0
    return np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), length)


def one_hot(sequences: Sequence[SequenceLike] | SequenceLike | np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
    """One-hot float32 ``[B, L, 4]`` (A, C, G, T) of equal-length sequences.

    Lower case encodes like upper case, IUPAC codes fractionally, N and unknown bytes as
    zeros. ``out`` (float32 ``[B, L, 4]``) is filled in place when given.
    """
    codes = as_codes(sequences)
    shape = (*codes.shape, len(ORDER))
    if out is None:
        return _ROWS[codes].view(np.float32).reshape(shape)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {shape}, got {out.dtype} "
                         f"{out.shape}")
    np.take(_ROWS, codes, out=out.view(np.complex128).reshape(codes.shape), mode="clip")
    return out
