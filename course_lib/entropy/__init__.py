"""Entropy coding for the course (notebook 04 and the learned codec).

- :mod:`.information`: self-information, entropy, cross-entropy, KL divergence, empirical
  entropy of images and quantised latents.
- :mod:`.rle`: run lengths and the PackBits byte format.
- :mod:`.huffman`: Huffman code lengths, canonical codes, encoding to bytes and back.
- :mod:`.cdf`: quantised integer CDFs from float models, tables of them with escape coding.
- :mod:`.rans`: a readable rANS coder with static and adaptive models, and a stream of values
  with a table each (the fast coder's format, readable).
- :mod:`.fast`: the fast coder for large streams, one table per value (``constriction``).

Every decoder raises :class:`DecodeError` (a ``ValueError``) on data it cannot decode, and
checks first that the data can hold what it is asked for (:func:`.cdf.check_stream_length`, a
bit per Huffman codeword), so that a few bytes never make it allocate or loop for millions of
values.
"""

from .cdf import (
    DEFAULT_PRECISION,
    CdfTable,
    gaussian_cdf_table,
    log_scale_table,
    quantize_pmf,
    scale_indexes,
)
from .errors import DecodeError
from .fast import decode_with_indexes, encode_with_indexes
from .huffman import HuffmanCode, canonical_codewords, huffman_code_lengths
from .information import (
    cross_entropy,
    empirical_entropy,
    empirical_pmf,
    entropy,
    kl_divergence,
    self_information,
)
from .rans import AdaptiveModel, StaticModel, rans_decode, rans_encode
from .rle import expand_runs, packbits_decode, packbits_encode, run_lengths

__all__ = [
    "DEFAULT_PRECISION",
    "AdaptiveModel",
    "CdfTable",
    "DecodeError",
    "HuffmanCode",
    "StaticModel",
    "canonical_codewords",
    "cross_entropy",
    "decode_with_indexes",
    "empirical_entropy",
    "empirical_pmf",
    "encode_with_indexes",
    "entropy",
    "expand_runs",
    "gaussian_cdf_table",
    "huffman_code_lengths",
    "kl_divergence",
    "log_scale_table",
    "packbits_decode",
    "packbits_encode",
    "quantize_pmf",
    "rans_decode",
    "rans_encode",
    "run_lengths",
    "scale_indexes",
    "self_information",
]
