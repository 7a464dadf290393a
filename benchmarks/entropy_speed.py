"""Speed of the course's entropy coders, and the measurement behind the fast path's design.

Run from the repository root:  .venv/bin/python benchmarks/entropy_speed.py
It prints a table and writes it to benchmarks/results/entropy_speed.txt.

The learned codec codes ~3e5 latents per image, each with one of 64 Gaussian CDFs. Candidates
for that fast path, all checked for an exact round trip on the same integer table:
- constriction's AnsCoder (stack) or RangeEncoder (queue), one concrete model per table with
  the values grouped by table (the library's ``encode_with_indexes`` is the AnsCoder one);
- constriction's Categorical model *family*, one row of probabilities per value;
- a vectorised numpy rANS: L interleaved lanes step together; each lane ends with a 4-byte
  state, so more lanes are faster but cost 4 * L bytes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import constriction
import numpy as np

from course_lib.bench import cpu_name
from course_lib.entropy import (
    AdaptiveModel,
    HuffmanCode,
    StaticModel,
    decode_with_indexes,
    encode_with_indexes,
    gaussian_cdf_table,
    log_scale_table,
    rans_decode,
    rans_encode,
    scale_indexes,
)
from course_lib.entropy.fast import constriction_model

RESULTS = Path(__file__).parent / "results" / "entropy_speed.txt"


def best_time(function, repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` runs (the machine is shared: the minimum is the least noisy)."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def numpy_rans_encode(symbols, indexes, cdfs, precision, lanes):
    """Interleaved rANS, 32-bit states in [2**16, 2**32), 16-bit words; symbol i in lane
    i % lanes. Returns (final states, words in decoding order)."""
    steps = -(-symbols.size // lanes)
    valid = np.arange(steps * lanes).reshape(steps, lanes) < symbols.size
    padded_symbols = np.zeros(steps * lanes, np.int64)
    padded_symbols[: symbols.size] = symbols
    padded_indexes = np.zeros(steps * lanes, np.int64)
    padded_indexes[: symbols.size] = indexes
    starts = cdfs[padded_indexes, padded_symbols].reshape(steps, lanes).astype(np.uint64)
    freqs = (cdfs[padded_indexes, padded_symbols + 1].reshape(steps, lanes)
             .astype(np.uint64) - starts)
    x = np.full(lanes, 1 << 16, np.uint64)
    chunks = []
    for step in range(steps - 1, -1, -1):
        freq = freqs[step]
        emit = (x >= freq << np.uint64(32 - precision)) & valid[step]
        chunks.append((x[emit] & np.uint64(0xFFFF)).astype(np.uint16))
        x = np.where(emit, x >> np.uint64(16), x)
        encoded = (x // freq << np.uint64(precision)) + x % freq + starts[step]
        x = np.where(valid[step], encoded, x)
    return x, np.concatenate(chunks[::-1])


def numpy_rans_decode(states, words, indexes, cdfs, precision):
    lanes, count = states.size, indexes.size
    steps = -(-count // lanes)
    width = cdfs.shape[1]
    # one sorted array for all tables: table t's CDF shifted by t * (total + 1)
    flat = (cdfs + np.arange(cdfs.shape[0])[:, None] * ((1 << precision) + 1)).reshape(-1)
    padded_indexes = np.zeros(steps * lanes, np.int64)
    padded_indexes[:count] = indexes
    padded_indexes = padded_indexes.reshape(steps, lanes)
    x, position = states.astype(np.uint64), 0
    out = np.zeros((steps, lanes), np.int64)
    mask = np.uint64((1 << precision) - 1)
    for step in range(steps):
        table = padded_indexes[step]
        slot = (x & mask).astype(np.int64)
        key = slot + table * ((1 << precision) + 1)
        symbol = np.searchsorted(flat, key, side="right") - 1 - table * width
        start = cdfs[table, symbol].astype(np.uint64)
        freq = cdfs[table, symbol + 1].astype(np.uint64) - start
        valid = step * lanes + np.arange(lanes) < count
        decoded = freq * (x >> np.uint64(precision)) + slot.astype(np.uint64) - start
        x = np.where(valid, decoded, x)
        refill = (x < np.uint64(1 << 16)) & valid
        need = int(refill.sum())
        x[refill] = (x[refill] << np.uint64(16)) | words[position : position + need]
        position += need
        out[step] = symbol
    return out.reshape(-1)[:count]


def constriction_encode(kind, symbols, groups, models):
    """Encode with one concrete model per table, values grouped by table beforehand."""
    if kind == "stack":
        coder = constriction.stream.stack.AnsCoder()
        for j, positions in reversed(groups):
            coder.encode_reverse(symbols[positions].astype(np.int32), models[j])
    else:
        coder = constriction.stream.queue.RangeEncoder()
        for j, positions in groups:
            coder.encode(symbols[positions].astype(np.int32), models[j])
    return coder.get_compressed()


def constriction_decode(kind, compressed, groups, models, count):
    if kind == "stack":
        decoder = constriction.stream.stack.AnsCoder(compressed)
    else:
        decoder = constriction.stream.queue.RangeDecoder(compressed)
    symbols = np.empty(count, np.int64)
    for j, positions in groups:
        symbols[positions] = decoder.decode(models[j], positions.size)
    return symbols


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = []

    def report(name, count, encode_s, decode_s, size, ideal):
        lines.append(f"{name:<46} {count / encode_s / 1e6:8.3f} {count / decode_s / 1e6:8.3f} "
                     f"{size:>9d} {100 * (size / ideal - 1):+8.3f}")
        print(lines[-1], flush=True)

    header = (f"{'coder':<46} {'enc Msym/s':>8} {'dec Msym/s':>8} {'bytes':>9} "
              f"{'vs ideal %':>8}")
    lines += [f"machine: {cpu_name()}, {os.cpu_count()} cores (shared), numpy {np.__version__}, "
              f"best of {args.repeats}; 'vs ideal': size over -sum log2 p of the coded model",
              "", header]
    print("\n".join(lines), flush=True)

    # Teaching coders: one static 40-symbol source.
    pmf = rng.dirichlet(np.full(40, 0.3))
    symbols = rng.choice(40, 100_000, p=pmf)
    model = StaticModel.from_pmf(pmf)
    ideal = -np.log2(np.diff(model.cdf())[symbols] / 2**16).sum() / 8
    encode_s, data = best_time(lambda: rans_encode(symbols, model), args.repeats)
    decode_s, decoded = best_time(lambda: rans_decode(data, symbols.size, model), args.repeats)
    assert np.array_equal(decoded, symbols)
    report("readable rANS, static model (1e5 symbols)", symbols.size, encode_s, decode_s,
           len(data), ideal)
    few = symbols[:20_000]
    adaptive = AdaptiveModel(40)
    encode_s, data = best_time(lambda: rans_encode(few, adaptive), args.repeats)
    decode_s, decoded = best_time(lambda: rans_decode(data, few.size, adaptive), args.repeats)
    assert np.array_equal(decoded, few)
    adaptive_bits = 0.0  # -sum log2 p under the adaptive model's own predictions
    for symbol in few:
        adaptive_bits -= np.log2(np.diff(adaptive.cdf())[symbol] / 2**16)
        adaptive.update(symbol)
    report("readable rANS, adaptive model (2e4 symbols)", few.size, encode_s, decode_s,
           len(data), adaptive_bits / 8)
    code = HuffmanCode.from_frequencies(pmf)
    encode_s, data = best_time(lambda: code.encode(symbols), args.repeats)
    decode_s, decoded = best_time(lambda: code.decode(data, symbols.size), args.repeats)
    assert np.array_equal(decoded, symbols)
    report("Huffman (1e5 symbols)", symbols.size, encode_s, decode_s, len(data), ideal)

    # Fast-path candidates: Gaussian latents, 64 tables, one index per value.
    table_scales = log_scale_table()
    table = gaussian_cdf_table(table_scales)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(60), args.latents))
    values = np.round(rng.normal(0, scales)).astype(np.int32)
    indexes = scale_indexes(scales, table_scales)
    ideal = table.information_bits(values, indexes) / 8
    lines.append("")
    lines.append(f"fast path candidates: {args.latents} Gaussian latents, 64 tables, "
                 f"ideal {ideal:.0f} bytes")
    print(lines[-2] + "\n" + lines[-1], flush=True)
    encode_s, data = best_time(lambda: encode_with_indexes(values, indexes, table), args.repeats)
    decode_s, decoded = best_time(lambda: decode_with_indexes(data, indexes, table),
                                  args.repeats)
    assert np.array_equal(decoded, values)
    report("encode/decode_with_indexes (the library)", values.size, encode_s, decode_s,
           len(data), ideal)
    # The raw coders below get the values already grouped by table and their models built:
    # they time the entropy coding alone.
    symbols, _ = table.split_values(values, indexes)
    order = np.argsort(indexes, kind="stable")
    bounds = np.cumsum(np.bincount(indexes, minlength=table.num_tables))[:-1]
    groups = [(j, positions) for j, positions in enumerate(np.split(order, bounds))
              if positions.size]
    models = {j: constriction_model(table.cdf(j), table.precision) for j, _ in groups}
    for kind, name in [("stack", "constriction AnsCoder, grouped by table"),
                       ("queue", "constriction RangeEncoder, grouped by table")]:
        encode_s, compressed = best_time(
            lambda kind=kind: constriction_encode(kind, symbols, groups, models), args.repeats)
        decode_s, decoded = best_time(
            lambda kind=kind, compressed=compressed: constriction_decode(
                kind, compressed, groups, models, symbols.size), args.repeats)
        assert np.array_equal(decoded, symbols)
        report(name, values.size, encode_s, decode_s, compressed.nbytes, ideal)
    # A model family needs a full row of probabilities per value: memory grows as
    # values x widest table, so it is timed on the first 5000 values only.
    few = slice(0, 5000)
    rows = (np.diff(table.cdfs, axis=1)[indexes[few]] - 1).astype(np.float32)
    rows[np.arange(rows.shape[1]) >= table.lengths[indexes[few]][:, None]] = 0
    family = constriction.stream.model.Categorical(perfect=False)

    def family_encode():
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols[few].astype(np.int32), family, rows)
        return coder.get_compressed()
    encode_s, compressed = best_time(family_encode, args.repeats)
    decode_s, decoded = best_time(
        lambda: constriction.stream.stack.AnsCoder(compressed).decode(family, rows),
        args.repeats)
    assert np.array_equal(decoded, symbols[few])
    report(f"constriction family, 5e3 values x {rows.shape[1]} floats", rows.shape[0],
           encode_s, decode_s, compressed.nbytes,
           table.information_bits(values[few], indexes[few]) / 8)
    for lanes in [32, 256, 2048]:
        encode_s, (states, words) = best_time(
            lambda lanes=lanes: numpy_rans_encode(symbols, indexes, table.cdfs, 16, lanes),
            args.repeats)
        decode_s, decoded = best_time(
            lambda states=states, words=words: numpy_rans_decode(
                states, words, indexes, table.cdfs, 16), args.repeats)
        assert np.array_equal(decoded, symbols)
        report(f"numpy rANS, {lanes} interleaved lanes", values.size, encode_s, decode_s,
               4 * lanes + 2 * words.size, ideal)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
