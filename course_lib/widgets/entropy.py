"""Demos for notebook 04: a Huffman code as a tree, and arithmetic coding / rANS step by step."""

from __future__ import annotations

from fractions import Fraction

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from ..entropy import HuffmanCode, quantize_pmf, self_information
from ..entropy.rans import STATE_LOW, WORD_BITS, encode_step
from . import live_output


def draw_code_tree(code: HuffmanCode, labels=None, pmf=None, ax=None):
    """Draw the binary tree of a prefix code: each codeword is a path from the root, 0 to the
    left, 1 to the right; its leaf shows the label (and probability, if ``pmf`` is given)."""
    codewords = {s: w for s, w in enumerate(code.codewords) if w}
    labels = [str(s) for s in range(len(code.codewords))] if labels is None else list(labels)
    depth = max(len(w) for w in codewords.values())
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.1 * len(codewords) + 1, 10), 0.8 * depth + 1.4))
    # Leaves side by side in codeword order; an inner node sits above the middle of its leaves.
    leaves = sorted(codewords.values())
    x_of = {word: float(i) for i, word in enumerate(leaves)}
    nodes = sorted({w[:i] for w in leaves for i in range(len(w))}, key=len, reverse=True)
    for prefix in nodes:
        children = [prefix + bit for bit in "01" if prefix + bit in x_of]
        x_of[prefix] = float(np.mean([x_of[child] for child in children]))
        for child in children:
            ax.plot([x_of[prefix], x_of[child]], [-len(prefix), -len(child)], color="0.6",
                    lw=1, zorder=1)
            ax.text((x_of[prefix] + x_of[child]) / 2, -len(prefix) - 0.5, child[-1],
                    fontsize=8, color="0.3", ha="right" if child[-1] == "0" else "left")
        ax.scatter(x_of[prefix], -len(prefix), s=20, color="0.4", zorder=2)
    for symbol, word in codewords.items():
        text = f"{labels[symbol]}\n{word}" + (f"\np={pmf[symbol]:.2f}" if pmf is not None else "")
        ax.text(x_of[word], -len(word), text, ha="center", va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": "round", "facecolor": "#fde9b5", "edgecolor": "0.5"})
    ax.set_xlim(-0.6, len(leaves) - 0.4)
    ax.set_ylim(-depth - 0.7, 0.4)
    ax.axis("off")
    return ax


def arithmetic_intervals(symbols, pmf) -> list[tuple[Fraction, Fraction]]:
    """The nested intervals of arithmetic coding, exactly: ``(low, width)`` before the first
    symbol (``(0, 1)``) and after each one. Symbol ``s`` keeps the part
    ``[low + width * P(< s), low + width * P(<= s))`` of the current interval, so the final
    width is the product of the probabilities of the message."""
    pmf = [Fraction(p).limit_denominator(1 << 20) for p in np.asarray(pmf, dtype=float)]
    total = sum(pmf)
    if total <= 0 or any(p < 0 for p in pmf):
        raise ValueError("pmf must be non-negative with a positive sum")
    pmf = [p / total for p in pmf]
    starts = [sum(pmf[:s], Fraction(0)) for s in range(len(pmf))]
    low, width = Fraction(0), Fraction(1)
    intervals = [(low, width)]
    for symbol in np.asarray(symbols, dtype=np.int64).tolist():
        if not 0 <= symbol < len(pmf) or pmf[symbol] == 0:
            raise ValueError(f"symbol {symbol} has no probability under this pmf")
        low, width = low + width * starts[symbol], width * pmf[symbol]
        intervals.append((low, width))
    return intervals


def rans_state_bits(symbols, pmf, precision: int = 16) -> np.ndarray:
    """Bits held by the rANS encoder after pushing each symbol in turn (the readable coder's
    :func:`~course_lib.entropy.rans.encode_step`): ``log2`` of the state plus the words
    already written, minus the 32 bits of the initial state. (n + 1,) float64 from 0."""
    cdf = quantize_pmf(pmf, precision)
    x, words, bits = STATE_LOW, [], [0.0]
    for symbol in np.asarray(symbols, dtype=np.int64).tolist():
        x = encode_step(x, int(cdf[symbol]), int(cdf[symbol + 1] - cdf[symbol]), precision,
                        words)
        bits.append(np.log2(x) + WORD_BITS * len(words) - np.log2(STATE_LOW))
    return np.array(bits)


def _parse_message(message: str) -> np.ndarray:
    symbols = [{"H": 0, "T": 1}.get(letter) for letter in message.upper() if letter.strip()]
    if not symbols or None in symbols:
        raise ValueError("type a message of coin flips: letters H and T, e.g. HHTHHHHTHH")
    return np.array(symbols)


def _draw_coder(message: str, p_heads: float, steps: int):
    symbols = _parse_message(message)[:16]
    pmf = np.array([p_heads, 1 - p_heads])
    intervals = arithmetic_intervals(symbols, pmf)
    steps = min(steps, len(symbols))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6),
                                         gridspec_kw={"width_ratios": [3, 2]})
    # Left: each column is the current interval, blown up to full height, split into H and T.
    for step in range(steps + 1):
        left.add_patch(plt.Rectangle((step - 0.15, 0), 0.3, p_heads, color="#9ecae1"))
        left.add_patch(plt.Rectangle((step - 0.15, p_heads), 0.3, 1 - p_heads, color="#fdae6b"))
        if step < steps:
            symbol = symbols[step]
            bottom, top = (0.0, p_heads) if symbol == 0 else (p_heads, 1.0)
            left.add_patch(plt.Rectangle((step - 0.15, bottom), 0.3, top - bottom, fill=False,
                                         lw=2, edgecolor="black"))
            left.plot([step + 0.15, step + 0.85], [top, 1], color="0.3", lw=0.8)
            left.plot([step + 0.15, step + 0.85], [bottom, 0], color="0.3", lw=0.8)
            left.text(step, -0.1, "HT"[symbol], ha="center", fontsize=10)
    low, width = intervals[steps]
    left.set_xlim(-0.5, max(steps, 1) + 0.5)
    left.set_ylim(-0.18, 1.05)
    left.set_xticks([])
    left.set_yticks([0, p_heads, 1], ["low", f"{p_heads:.2f}", "high"])
    left.set_title(f"after {steps} flips: [{float(low):.4f}, {float(low + width):.4f}), width "
                   f"{float(width):.3g} = {-np.log2(float(width)):.2f} bits (blue H, orange T)",
                   fontsize=10)
    # Right: information so far against the bits the rANS state holds.
    information = np.concatenate([[0], np.cumsum(self_information(pmf[symbols]))])
    state = rans_state_bits(symbols, pmf)
    right.plot(information[: steps + 1], "o-", label="-log2 P(message so far)")
    right.plot(state[: steps + 1], "s--", ms=4, label="rANS state bits")
    right.set_xlabel("flips coded")
    right.set_ylabel("bits")
    right.set_xlim(-0.3, len(symbols) + 0.3)
    right.set_ylim(-0.5, information[-1] + 1)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.tight_layout()
    plt.show()


def coder_explorer(message: str = "HHTHHHHTHH", p_heads: float = 0.8, steps: int = 4):
    """Arithmetic coding and rANS on a message of coin flips, one flip at a time.

    Left: the interval of arithmetic coding after each flip, each column zoomed to full
    height (the chosen part becomes the next column); right: the information of the message
    so far next to the bits held by the rANS state. Draws the default state as a static
    figure, then returns the live panel (message, P(heads), number of flips coded).
    """
    _parse_message(message)
    _draw_coder(message, p_heads, steps)
    message_box = widgets.Text(value=message, description="message")
    heads = widgets.FloatSlider(value=p_heads, min=0.05, max=0.95, step=0.05,
                                description="P(heads)", continuous_update=False)
    step_slider = widgets.IntSlider(value=steps, min=0, max=16, description="flips coded")

    def draw(message, p_heads, steps):
        try:
            _draw_coder(message, p_heads, steps)
        except ValueError as err:
            print(err)

    output = live_output(
        draw, {"message": message_box, "p_heads": heads, "steps": step_slider})
    return widgets.VBox([widgets.HBox([message_box, heads, step_slider]), output])
