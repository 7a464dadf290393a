"""A CNN meets JPEG (notebook 08): a CNN that picks JPEG's quality, a CNN that repairs JPEG.

Both keep the file a standard JPEG (Pillow, 4:2:0, ``optimize=True``: the benchmark's
settings, :mod:`course_lib.codecs.classical`) that every browser opens.

* **Steering the encoder.** :func:`bisect_quality` is the exact answer: the smallest integer
  quality 1..95 whose decoded image reaches a target PSNR (PSNR-RGB on 8 bits, as
  :func:`course_lib.metrics.psnr`), found by bisection, about 7 encode + decode + PSNR probes.
  :class:`QualityPredictor` reads the image once and predicts its whole PSNR-versus-quality
  curve on :data:`QUALITY_GRID`; :func:`quality_from_curve` inverts the curve for any target,
  so :func:`predict_quality` needs no JPEG encoding at all; with ``probe=True`` it encodes
  once at the predicted quality, compares with the original and corrects the curve by the
  difference (the articles' "adjust JPEG's parameters from the difference", in one step).
* **Repairing the decoder's output.** :class:`PostFilter` is a residual CNN run on the
  decoded image (in the spirit of AR-CNN, Dong et al. 2015): the bytes do not change, the
  decoder adds a correction. It is told the quality, which :func:`jpeg_quality` reads back
  from the file's quantisation tables, so any baseline JPEG can be repaired
  (:func:`decode_filtered`).

Both networks look at the image in JPEG's own blocks: the predictor's fixed front end is
JPEG's transform (YCbCr, 4:2:0, the 8 x 8 DCT, as convolutions) and its learned part predicts
each 16 x 16 macroblock's error from the magnitudes of its 384 coefficients; the filter works
on ``pixel_unshuffle(x, 8)``, one 192-value vector per 8 x 8 block (64 pixels x RGB).
Shipped weights (``weights/cnn_jpeg/``) load with :func:`load_predictor` /
:func:`load_filter`; they were made with the commands of ``weights/cnn_jpeg/README.md``::

    python -m course_lib.cnn_jpeg train-predictor --run-dir runs/cnn_jpeg/predictor \\
        --out weights/cnn_jpeg/quality_predictor.pt
    python -m course_lib.cnn_jpeg train-filter --run-dir runs/cnn_jpeg/filter \\
        --out weights/cnn_jpeg/post_filter.pt

Both train through the course's one trainer, :func:`course_lib.train.train`.
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import time
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import weights
from .codecs import classical
from .images import RGB_TO_YCBCR, ImageError, load_image

#: The qualities at which the predictor gives the PSNR (the benchmark's range, and 1).
QUALITY_GRID = (1, *range(5, 100, 5))
#: Qualities :func:`bisect_quality` and :func:`predict_quality` choose from.
MIN_QUALITY, MAX_QUALITY = 1, 95
#: JPEG's coefficients in one 16 x 16 macroblock of 4:2:0: four luma blocks, one Cb, one Cr.
MACROBLOCK_COEFFICIENTS = 6 * 64
#: The predictor reads every EVERY-th row and column of macroblocks (a quarter of the image).
EVERY = 2
#: Targets accepted by the quality search, in dB (PSNR-RGB, 8 bits).
TARGET_RANGE = (15.0, 60.0)
PREDICTOR_FILE = "cnn_jpeg/quality_predictor.pt"
FILTER_FILE = "cnn_jpeg/post_filter.pt"


# ---------------------------------------------------------------------------------------------
# JPEG at the benchmark's settings, and the exact answer


def _check_image(image) -> np.ndarray:
    array = classical.check_rgb_image(image)
    if min(array.shape[:2]) < 8:
        raise ImageError(f"the image must be at least 8 x 8 pixels, got {array.shape[:2]}")
    return array


def _check_target(target_psnr) -> float:
    target = float(target_psnr)
    if not TARGET_RANGE[0] <= target <= TARGET_RANGE[1]:
        raise ValueError(f"target PSNR must be in {TARGET_RANGE[0]:g}..{TARGET_RANGE[1]:g} dB "
                         f"(JPEG's qualities 1..95 span about 20..50 dB), got {target_psnr}")
    return target


def psnr_uint8(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR-RGB in dB of two uint8 images, as :func:`course_lib.metrics.psnr` (8-bit peak
    255), computed in integers with NumPy because the quality search calls it often."""
    # the differences fit in int16; their squares are summed by a float64 dot product, exact
    # for integers below 2**53 (a 2**31-pixel image stays below it) and several times faster
    # than squaring in int32
    difference = np.subtract(original, decoded, dtype=np.int16).ravel().astype(np.float64)
    mse = float(difference @ difference) / difference.size
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def jpeg_psnr(image: np.ndarray, quality: int) -> tuple[float, int]:
    """``(PSNR in dB, file size in bytes)`` of ``image`` coded as JPEG at ``quality``."""
    data = classical.encode(image, "jpeg", int(quality))
    return psnr_uint8(image, classical.decode(data)), len(data)


def probe_psnr(image: np.ndarray, quality: int) -> float:
    """PSNR in dB of ``image`` coded as JPEG at ``quality``, without the file: the same
    encoder settings except Huffman table optimisation, which changes the bytes but not one
    decoded pixel (a test checks it), and costs a second pass over the image."""
    options = {**classical.get_codec("jpeg").options(quality), "optimize": False}
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", **options)
    buffer.seek(0)
    with Image.open(buffer) as picture:  # our own file: no need for load_image's checks
        decoded = np.asarray(picture.convert("RGB"))
    return psnr_uint8(image, decoded)


def bisect_quality(image: np.ndarray, target_psnr: float) -> int:
    """The smallest quality in 1..95 whose JPEG reaches ``target_psnr`` (95 if none does).

    Bisection over the integer qualities: about ``log2(95)``, i.e. 7, encode + decode + PSNR
    probes (:func:`probe_psnr`). It assumes the PSNR grows with the quality, which holds for
    Pillow's JPEG up to rare dips of a few hundredths of a dB.
    """
    image = _check_image(image)
    target = _check_target(target_psnr)
    low, high = MIN_QUALITY, MAX_QUALITY  # the answer lies in low..high
    while low < high:
        middle = (low + high) // 2
        if probe_psnr(image, middle) >= target:
            high = middle
        else:
            low = middle + 1
    return low


# ---------------------------------------------------------------------------------------------
# Reading the quality back from a file


@cache
def _reference_tables() -> dict[int, np.ndarray]:
    """Pillow's quantisation tables (luma and chroma, in the file's order) for each quality."""
    tiny = np.zeros((16, 16, 3), np.uint8)
    return {quality: _tables(classical.encode(tiny, "jpeg", quality))
            for quality in range(1, 101)}


def _tables(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        tables = getattr(picture, "quantization", None)
        if picture.format != "JPEG" or not tables:
            raise ImageError("not a baseline JPEG file with quantisation tables")
        rows = [list(tables[index]) for index in sorted(tables)[:2]]
    if len(rows) == 1:  # a greyscale file has only the luma table
        rows.append(rows[0])
    return np.log(np.asarray(rows, dtype=np.float64))


def jpeg_quality(data: bytes) -> int:
    """The IJG quality 1..100 whose tables are closest to this JPEG file's own.

    Exact for files written by Pillow / libjpeg with a quality setting; for other encoders the
    nearest quality in the sense of log-steps, which is what the filter needs to know.
    """
    tables = _tables(bytes(data))
    distances = {quality: float(np.abs(reference - tables).mean())
                 for quality, reference in _reference_tables().items()}
    return min(distances, key=distances.get)


# ---------------------------------------------------------------------------------------------
# The models


def _pad_to_blocks(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right by replication, as a JPEG encoder pads its last blocks."""
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a float tensor (N, 3, H, W) in [0, 1], got {shape}")
    if min(x.shape[-2:]) < 8:
        raise ValueError(f"images must be at least 8 x 8 pixels, got {tuple(x.shape[-2:])}")


class QualityPredictor(nn.Module):
    """Predicts an image's JPEG PSNR at every quality of :data:`QUALITY_GRID` in one pass.

    ``forward(x)``: ``x`` (N, 3, H, W) in [0, 1] -> PSNR in dB, (N, len(grid)), increasing
    along the grid by construction.

    It reads the image the way JPEG codes it. A fixed front end does JPEG's own transform
    (:meth:`coefficients`): RGB to YCbCr (BT.601), the colour averaged over 2 x 2 pixels
    (4:2:0), and the 8 x 8 DCT of every block, all as convolutions; each 16 x 16 macroblock
    becomes the 384 coefficients JPEG quantises (its four luma blocks, one block of Cb, one of
    Cr). What JPEG throws away depends on each coefficient's size against its quantisation
    step, so the learned part sees ``log |c|``: a coarser step is then a shift. Three 1 x 1
    convolutions over the grid of macroblocks, the same small network for every macroblock,
    give the log of its mean squared error at the first quality and how much it falls at each
    further quality (softplus, so positive). JPEG codes every macroblock on its own, so the
    image's MSE is the mean of its macroblocks' MSEs, exactly as for the real file, and the
    PSNR follows: a learned, fast stand-in for "encode, decode, compare" at 20 qualities. For
    the same reason a sample of the macroblocks gives an estimate of that mean
    (:func:`predicted_curve`'s ``every``).
    """

    def __init__(self, hidden: int = 64, grid=QUALITY_GRID):
        super().__init__()
        self.config = {"hidden": hidden, "grid": list(grid)}
        self.grid = tuple(grid)
        from .conv import dct_kernels

        # JFIF's RGB -> YCbCr (course_lib.images), without the offset of 128 on Cb and Cr
        ycbcr = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32)[:, :, None, None]
        self.register_buffer("luma_weights", ycbcr[:1], persistent=False)
        # 4:2:0's 2 x 2 average and the colour conversion in one stride-2 convolution
        self.register_buffer("chroma_weights", (ycbcr[1:] / 4).expand(2, 3, 2, 2).contiguous(),
                             persistent=False)
        self.register_buffer("dct", dct_kernels(8), persistent=False)
        self.mix = nn.Conv2d(MACROBLOCK_COEFFICIENTS, hidden, kernel_size=1)
        self.inner = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.head = nn.Conv2d(hidden, len(self.grid), kernel_size=1)
        with torch.no_grad():
            self.head.bias.fill_(-1.0)  # start near a photo: MSE 1e-2 at q=1, falling slowly
            self.head.bias[0] = math.log(1e-2)

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """JPEG's transform of ``x`` (N, 3, H, W) in [0, 1], on the 0..1 scale: the DCT of
        every 8 x 8 luma block, (N, 64, H/8, W/8), and of every 8 x 8 block of Cb and Cr after
        4:2:0, (N, 128, H/16, W/16) (Cb's 64 frequencies, then Cr's). Channel ``u * 8 + v``
        holds frequency ``(u, v)``, as :func:`course_lib.conv.block_dct`. The image is first
        padded to whole macroblocks by repeating its last row and column, as a JPEG encoder
        does."""
        _check_batch(x)
        x = _pad_to_blocks(x, 16)
        n, _, height, width = x.shape
        luma = F.conv2d(x, self.luma_weights, self.luma_weights.new_tensor([-0.5]))
        luma = F.conv2d(luma, self.dct, stride=8)
        chroma = F.conv2d(x, self.chroma_weights, stride=2)          # 4:2:0, centred on 0
        chroma = F.conv2d(chroma.reshape(2 * n, 1, height // 2, width // 2), self.dct, stride=8)
        return luma, chroma.reshape(n, 128, height // 16, width // 16)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> JPEG's DCT coefficients per macroblock,
        (N, 384, H/16, W/16): the 64 frequencies of its top-left, top-right, bottom-left and
        bottom-right luma blocks (interleaved, as ``pixel_unshuffle`` orders them: channel
        ``4 k + b`` is frequency ``k`` of block ``b``), then Cb's 64, then Cr's
        (:meth:`transform`)."""
        luma, chroma = self.transform(x)
        return torch.cat([F.pixel_unshuffle(luma, 2), chroma], dim=1)

    def _log_mse(self, mixed: torch.Tensor) -> torch.Tensor:
        out = self.head(F.relu(self.inner(F.relu(mixed))))
        first, drops = out[:, :1], F.softplus(out[:, 1:])
        return torch.cat([first, first - torch.cumsum(drops, dim=1)], dim=1)

    def log_mse_from_coefficients(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(N, 384, h, w) coefficients -> log MSE per macroblock and quality, (N, K, h, w)."""
        return self._log_mse(self.mix(torch.log(coefficients.abs() + 1 / 255)))

    def block_log_mse(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> natural log of each 16 x 16 macroblock's MSE at each quality of the
        grid, (N, len(grid), H/16, W/16).

        The same numbers as ``log_mse_from_coefficients(coefficients(x))``, without moving
        the luma blocks into the macroblock's channels: the ``mix`` layer's weights for the
        four luma blocks act as one 2 x 2 convolution with stride 2 on the grid of blocks.
        """
        luma, chroma = self.transform(x)
        hidden = self.mix.out_channels
        luma_weights = self.mix.weight[:, :256, 0, 0].reshape(hidden, 64, 2, 2)
        mixed = (F.conv2d(torch.log(luma.abs() + 1 / 255), luma_weights, self.mix.bias,
                          stride=2)
                 + F.conv2d(torch.log(chroma.abs() + 1 / 255), self.mix.weight[:, 256:]))
        return self._log_mse(mixed)

    @staticmethod
    def _psnr(log_mse: torch.Tensor) -> torch.Tensor:
        log_mse = log_mse.flatten(2)                                       # (N, K, blocks)
        mean_log = torch.logsumexp(log_mse, dim=2) - math.log(log_mse.shape[2])
        return -10.0 / math.log(10.0) * mean_log                           # PSNR, peak 1

    def psnr_from_coefficients(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The predicted PSNR curve (N, K) from :meth:`coefficients` (training reuses them)."""
        return self._psnr(self.log_mse_from_coefficients(coefficients))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._psnr(self.block_log_mse(x))


def macroblock_sample(image: np.ndarray, every: int) -> np.ndarray:
    """The macroblocks (16 x 16 pixels) of ``image`` in every ``every``-th row and column of
    macroblocks, side by side in a smaller image; ``every=1`` gives the image itself. The
    image is first padded to whole macroblocks by repeating its last row and column, as a
    JPEG encoder does."""
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if every == 1:
        return image
    pad = ((0, -image.shape[0] % 16), (0, -image.shape[1] % 16), (0, 0))
    if pad[0][1] or pad[1][1]:
        image = np.pad(image, pad, mode="edge")
    rows, columns = image.shape[0] // 16, image.shape[1] // 16
    blocks = image.reshape(rows, 16, columns, 16, 3)[::every, :, ::every]
    return np.ascontiguousarray(blocks).reshape(16 * blocks.shape[0], 16 * blocks.shape[2], 3)


class PostFilter(nn.Module):
    """A residual CNN that removes JPEG artefacts from a decoded image, told the quality.

    ``forward(x, quality)``: ``x`` (N, 3, H, W) in [0, 1], the decoded JPEG; ``quality``
    (N,) the file's quality 1..100 -> the repaired image (N, 3, H, W), not clipped.

    It works block by block like JPEG: ``pixel_unshuffle(x, 8)`` turns each 8 x 8 block of RGB
    into one vector of 192 values, 3 x 3 convolutions mix each block with its 8 neighbours
    (deblocking needs both sides of a block edge; 4:2:0's colour lives in 16 x 16 squares),
    and the last layer gives a correction per pixel that is added to the input. The last layer
    starts at zero, so training starts from "no change". The quality enters as one more input
    plane, ``quality / 100``.
    """

    def __init__(self, channels: int = 128, layers: int = 6):
        super().__init__()
        if layers < 2:
            raise ValueError(f"a PostFilter needs at least 2 layers, got {layers}")
        self.config = {"channels": channels, "layers": layers}
        self.max_quality = 100  # filter_jpeg leaves files above it alone (see save_model)
        block_values = 3 * 64
        sizes = [block_values + 1] + [channels] * (layers - 1) + [block_values]
        self.convs = nn.ModuleList(
            nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, padding_mode="replicate")
            for inputs, outputs in zip(sizes[:-1], sizes[1:], strict=True))
        for conv in self.convs[:-1]:  # He initialisation keeps the signal alive in depth
            nn.init.kaiming_normal_(conv.weight, a=0.1, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, quality) -> torch.Tensor:
        _check_batch(x)
        height, width = x.shape[-2:]
        quality = torch.as_tensor(quality, dtype=x.dtype, device=x.device).reshape(-1)
        if quality.numel() == 1:
            quality = quality.expand(x.shape[0])
        if quality.numel() != x.shape[0] or bool(((quality < 1) | (quality > 100)).any()):
            raise ValueError("quality must hold one value in 1..100 per image, got "
                             f"{quality.tolist()} for {x.shape[0]} image(s)")
        padded = _pad_to_blocks(x, 8)
        blocks = F.pixel_unshuffle(padded - 0.5, 8)                  # (N, 192, H/8, W/8)
        plane = (quality / 100).view(-1, 1, 1, 1).expand(-1, 1, *blocks.shape[-2:])
        out = torch.cat([blocks, plane], dim=1)
        for index, conv in enumerate(self.convs):
            out = conv(out)
            if index < len(self.convs) - 1:
                out = F.leaky_relu(out, 0.1)  # a leak keeps units from dying early on
        return (padded + F.pixel_shuffle(out, 8))[..., :height, :width]


# ---------------------------------------------------------------------------------------------
# Shipped weights and the two everyday functions


def save_model(model: nn.Module, path, **extra) -> Path:
    """Write ``{"kind", "config", "state_dict" (float16), **extra}``, loadable with
    ``torch.load(weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu", torch.float16)
             for name, tensor in model.state_dict().items()}
    if isinstance(model, PostFilter):
        extra = {"max_quality": int(model.max_quality), **extra}
    torch.save({"kind": type(model).__name__, "config": model.config, "state_dict": state,
                **extra}, path)
    return path


def load_model(path) -> nn.Module:
    """A :class:`QualityPredictor` or :class:`PostFilter` from a file of :func:`save_model`,
    in float32 and eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    kinds = {"QualityPredictor": QualityPredictor, "PostFilter": PostFilter}
    if saved.get("kind") not in kinds:
        raise ValueError(f"{path} holds no cnn_jpeg model (kind {saved.get('kind')!r})")
    model = kinds[saved["kind"]](**saved["config"])
    model.load_state_dict({name: tensor.float() for name, tensor in saved["state_dict"].items()})
    if isinstance(model, PostFilter):
        model.max_quality = int(saved.get("max_quality", 100))
    return model.eval()


@cache
def load_predictor() -> QualityPredictor:
    """The shipped quality predictor (``weights/cnn_jpeg/quality_predictor.pt``, sha256
    checked)."""
    return load_model(weights.path(PREDICTOR_FILE))


@cache
def load_filter() -> PostFilter:
    """The shipped post-filter (``weights/cnn_jpeg/post_filter.pt``, sha256 checked)."""
    return load_model(weights.path(FILTER_FILE))


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    # permute the bytes first: converting a strided view to float is several times slower;
    # np.array copies, so a read-only array (np.asarray of a PIL image) is taken as it is
    planes = torch.from_numpy(np.array(image, order="C")).permute(2, 0, 1).contiguous()
    return planes[None].float().mul_(1 / 255)


def predicted_curve(image: np.ndarray, model: QualityPredictor | None = None,
                    every: int = EVERY) -> np.ndarray:
    """The predicted PSNR (dB) of ``image`` at each quality of the model's grid.

    ``every``: read the macroblocks of every ``every``-th row and column only
    (:func:`macroblock_sample`); the default 2 reads a quarter of the image, four times
    faster, and the mean of their MSEs estimates the image's. ``every=1`` reads them all.
    """
    image = _check_image(image)
    model = load_predictor() if model is None else model
    with torch.inference_mode():
        return model.eval()(_as_tensor(macroblock_sample(image, every)))[0].double().numpy()


def quality_from_curve(curve, target_psnr: float, grid=QUALITY_GRID) -> int:
    """The integer quality at which a PSNR-versus-quality ``curve`` (on ``grid``) reaches the
    target: linear interpolation between the two grid points around the target, rounded *up*
    so that the target is met when the curve is right; clipped to 1..95."""
    curve, grid = np.asarray(curve, np.float64), np.asarray(grid, np.float64)
    target = _check_target(target_psnr)
    if curve.shape != grid.shape:
        raise ValueError(f"the curve has {curve.shape} values for a grid of {grid.shape}")
    above = np.nonzero(curve >= target)[0]
    if len(above) == 0:
        quality = MAX_QUALITY
    elif above[0] == 0:
        quality = grid[0]
    else:
        k = above[0]
        fraction = (target - curve[k - 1]) / (curve[k] - curve[k - 1])
        quality = math.ceil(grid[k - 1] + fraction * (grid[k] - grid[k - 1]) - 1e-9)
    return int(min(max(quality, MIN_QUALITY), MAX_QUALITY))


def predict_quality(image: np.ndarray, target_psnr: float,
                    model: QualityPredictor | None = None, probe: bool = False,
                    every: int = EVERY) -> int:
    """The JPEG quality the predictor expects to reach ``target_psnr`` on ``image``.

    ``probe=False``: one pass of the CNN and an interpolation, no JPEG encoding at all.
    ``probe=True``: then one real JPEG at that quality (:func:`probe_psnr`); the difference
    between its PSNR and the predicted one shifts the whole predicted curve, which is read
    again. The CNN gives the curve's shape, the probe its level: one encode instead of
    bisection's seven (compare :func:`bisect_quality`). ``every``: as in
    :func:`predicted_curve`.
    """
    target = _check_target(target_psnr)
    model = load_predictor() if model is None else model
    curve = predicted_curve(image, model, every)
    quality = quality_from_curve(curve, target, model.grid)
    if probe:
        offset = probe_psnr(image, quality) - np.interp(quality, model.grid, curve)
        quality = quality_from_curve(curve + offset, target, model.grid)
    return quality


def filter_jpeg(decoded: np.ndarray, quality: int, model: PostFilter | None = None
                ) -> np.ndarray:
    """The post-filter applied to a decoded JPEG: uint8 RGB (H, W, 3) in, uint8 out.

    Above the model's ``max_quality`` (kept in its weights file: the highest quality at which
    it still gained on the validation images) the decoded image is returned unchanged: there
    is little left to repair, and the filter's own errors would cost more than it fixes.
    """
    decoded = _check_image(decoded)
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    model = load_filter() if model is None else model
    if quality > model.max_quality:
        return decoded.copy()
    with torch.no_grad():
        repaired = model.eval()(_as_tensor(decoded), int(quality))
    return (repaired[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def decode_filtered(data: bytes, model: PostFilter | None = None) -> np.ndarray:
    """Decode a JPEG file and repair it: the quality is read from the file's tables."""
    data = bytes(data)
    return filter_jpeg(load_image(data), jpeg_quality(data), model)


def text_page(height: int = 256, width: int = 384) -> np.ndarray:
    """Black text on white, uint8 RGB: sharp edges on a flat background, nothing like the
    training photos (where the post-filter is weakest)."""
    from PIL import ImageDraw, ImageFont

    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=14)
    line = "JPEG rings around sharp edges: 0123456789 the quick brown fox"
    for row in range(8, height - 16, 18):
        draw.text((6, row), line[(row // 18) % 9:], fill="black", font=font)
    return np.asarray(page)


# ---------------------------------------------------------------------------------------------
# Training data


def _random_crop(image: np.ndarray, size: int, generator: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    if min(height, width) < size:
        image = np.pad(image, ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0)),
                       mode="reflect")
        height, width = image.shape[:2]
    top = int(generator.integers(0, height - size + 1))
    left = int(generator.integers(0, width - size + 1))
    return image[top:top + size, left:left + size]


def predictor_labels(paths, crop_size: int = 192, crops_per_image: int = 4, seed: int = 0,
                     grid=QUALITY_GRID) -> dict:
    """Random crops of ``paths`` and their exact JPEG PSNRs at every quality of ``grid``.

    Half of the crops come from a copy of the image shrunk by a random factor 0.5..1 (where
    the crop still fits), so the model sees several scales of detail. Returns
    ``{"crops": uint8 (M, 3, S, S), "psnr": float32 (M, len(grid)), "grid": ...}``.
    """
    generator = np.random.default_rng(seed)
    crops, labels = [], []
    for path in paths:
        image = load_image(path)
        for index in range(crops_per_image):
            picture = image
            if index % 2 == 1:
                factor = generator.uniform(0.5, 1.0)
                size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
                if min(size) >= crop_size:
                    picture = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
            crop = np.array(_random_crop(picture, crop_size, generator))
            crops.append(torch.from_numpy(crop).permute(2, 0, 1))
            labels.append([jpeg_psnr(crop, quality)[0] for quality in grid])
    psnr = torch.tensor(labels, dtype=torch.float32).clamp(max=99.0)
    return {"crops": torch.stack(crops), "psnr": psnr, "grid": list(grid)}


class JpegPatches(torch.utils.data.Dataset):
    """Training pairs for the post-filter: ``(decoded, original, quality)``.

    A random ``patch_size`` crop of a training image (random flips, as
    :class:`course_lib.datasets.PatchDataset`), coded as a JPEG file of its own at a random
    quality: with probability ``low_share`` uniform in 5..50, else uniform in 51..95 (the
    filter has most to gain at low qualities; the benchmark's range is 5..95). The crop is its
    own image, so its blocks start at its top-left corner, as in a real file.
    """

    def __init__(self, paths, patch_size: int = 96, patches_per_image: int = 8,
                 low_share: float = 0.7):
        from .datasets import PatchDataset

        self.patches = PatchDataset(paths, patch_size, train=True,
                                    patches_per_image=patches_per_image)
        self.low_share = low_share

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, item: int):
        original = self.patches[item]
        if float(torch.rand(())) < self.low_share:
            quality = int(torch.randint(5, 51, ()))
        else:
            quality = int(torch.randint(51, 96, ()))
        pixels = (original.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        decoded = classical.decode(classical.encode(pixels, "jpeg", quality))
        return (torch.from_numpy(decoded).permute(2, 0, 1).float() / 255, original,
                torch.tensor(float(quality)))


# ---------------------------------------------------------------------------------------------
# Training through the course's trainer


#: Channel order of :meth:`QualityPredictor.coefficients` after mirroring the image left-right
#: (then top-bottom): the luma blocks of each macroblock trade places, every magnitude stays.
_MIRRORED = [torch.cat([torch.arange(256).reshape(64, 4)[:, order].flatten(),
                        torch.arange(256, MACROBLOCK_COEFFICIENTS)])
             for order in ([1, 0, 3, 2], [2, 3, 0, 1])]


def predictor_loss(model: nn.Module, batch) -> dict:
    """Squared error of the predicted PSNR curve, averaged over the grid (dB²), plus the
    squared error of its steps from one grid quality to the next (its slope: reading a
    quality off the curve and the probe's shift need it; without this term the curve fits
    its points in a zigzag of steps), both with a tenth of the weight above 45 dB (flat crops
    reach 50-99 dB there and would otherwise dominate the range that targets use).

    ``batch``: ``(coefficients, psnr)``, the crops' :meth:`QualityPredictor.coefficients`
    (computed once: the front end has nothing to learn) and their PSNR curves. A random mirror
    of the crop, left-right and top-bottom, only swaps the luma blocks inside each macroblock
    (and signs, which ``log |c|`` ignores): done on the coefficients."""
    coefficients, psnr = batch
    coefficients = coefficients.float()
    for index in _MIRRORED:
        if float(torch.rand(())) < 0.5:
            coefficients = coefficients[:, index]
    error = model.psnr_from_coefficients(coefficients) - psnr
    weight = torch.where(psnr <= 45.0, 1.0, 0.1)
    step_error = torch.diff(error, dim=1)
    step_weight = torch.minimum(weight[:, 1:], weight[:, :-1])
    loss = ((weight * error**2).sum() / weight.sum()
            + (step_weight * step_error**2).sum() / step_weight.sum())
    return {"loss": loss, "mae_db": error.abs().mean()}


def filter_loss(model: nn.Module, batch) -> dict:
    """Mean squared error of the repaired patch; PSNR gain over the decoded JPEG, logged."""
    decoded, original, quality = batch
    repaired = model(decoded, quality)
    mse = F.mse_loss(repaired, original)
    with torch.no_grad():
        before = F.mse_loss(decoded, original)
        gain = 10 * torch.log10(before / mse.clamp_min(1e-12))
    return {"loss": mse, "gain_db": gain}


def train_predictor(run_dir, steps: int = 20000, batch_size: int = 32, lr: float = 2e-3,
                    crops_per_image: int = 16, crop_size: int = 192, paths=None,
                    minutes: float | None = None, progress: bool = True,
                    model: QualityPredictor | None = None):
    """Train a :class:`QualityPredictor` on exact JPEG PSNRs of training crops.

    The labels (:func:`predictor_labels`) are computed once and kept in
    ``run_dir/labels.pt``; the crops' DCT coefficients (the fixed front end) once per call,
    in float16; training resumes from ``run_dir/checkpoint.pt``. Cosine learning rate decay
    to 1 % over ``steps``. Returns ``(model, TrainResult)``.
    """
    from .datasets import training_paths
    from .train import time_budget, train

    if crop_size % 16:
        raise ValueError(f"crop_size must be a multiple of 16 (whole macroblocks), got "
                         f"{crop_size}")
    run_dir = Path(run_dir)
    labels_file = run_dir / "labels.pt"
    if labels_file.is_file():
        labels = torch.load(labels_file, weights_only=True)
    else:
        paths = training_paths() if paths is None else paths
        labels = predictor_labels(paths, crop_size, crops_per_image)
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.save(labels, labels_file)
    model = QualityPredictor(grid=labels["grid"]) if model is None else model
    with torch.no_grad():
        coefficients = torch.cat([model.coefficients(crops.float() / 255).half()
                                  for crops in labels["crops"].split(64)])
    dataset = torch.utils.data.TensorDataset(coefficients, labels["psnr"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         drop_last=len(dataset) > batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 100)
    result = train(model, loader, predictor_loss, optimizer, steps=steps, scheduler=scheduler,
                   device="cpu", checkpoint_path=run_dir / "checkpoint.pt",
                   checkpoint_every=500, log_csv=run_dir / "log.csv", log_every=50,
                   progress=progress, callback=time_budget(minutes))
    return model.eval(), result


def train_filter(run_dir, steps: int = 8000, batch_size: int = 16, patch_size: int = 96,
                 lr: float = 5e-4, paths=None, minutes: float | None = None,
                 progress: bool = True, model: PostFilter | None = None):
    """Train a :class:`PostFilter` on JPEG-coded patches of the training set
    (:class:`JpegPatches`), mean squared error, Adam with cosine decay to 1 %, gradient
    clipping at 1. Resumes from ``run_dir/checkpoint.pt``. Returns ``(model, TrainResult)``.
    """
    from .datasets import training_paths
    from .train import time_budget, train

    run_dir = Path(run_dir)
    paths = training_paths() if paths is None else paths
    model = PostFilter() if model is None else model
    dataset = JpegPatches(paths, patch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         drop_last=len(dataset) > batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 100)
    result = train(model, loader, filter_loss, optimizer, steps=steps, scheduler=scheduler,
                   device="cpu", clip_grad_norm=1.0, checkpoint_path=run_dir / "checkpoint.pt",
                   checkpoint_every=200, log_csv=run_dir / "log.csv", log_every=50,
                   progress=progress, callback=time_budget(minutes))
    return model.eval(), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.cnn_jpeg",
        description="Train the quality predictor or the post-filter of notebook 08 on the "
                    "course's training set (CPU); --out writes the float16 weights and the "
                    "training log next to them and records their sha256 when they lie in "
                    "weights/.")
    parser.add_argument("command", choices=["train-predictor", "train-filter"])
    parser.add_argument("--run-dir", type=Path, required=True,
                        help="checkpoint, log and (predictor) labels; resumed if present")
    parser.add_argument("--steps", type=int, help="optimiser steps in total")
    parser.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this "
                        "wall time; run again to continue")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--lr", type=float, help="Adam's first learning rate (default: "
                        "2e-3 for the predictor, 5e-4 for the filter)")
    parser.add_argument("--init", type=Path, help="start a fresh run from these weights "
                        "(a file of save_model, e.g. the shipped ones)")
    parser.add_argument("--out", type=Path, help="write the trained weights here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    options = {"minutes": args.minutes}
    if args.lr is not None:
        options["lr"] = args.lr
    if args.init is not None:
        options["model"] = load_model(args.init).train()
        expected = "QualityPredictor" if args.command == "train-predictor" else "PostFilter"
        if type(options["model"]).__name__ != expected:
            parser.error(f"--init {args.init} holds a {type(options['model']).__name__}, "
                         f"not a {expected}")
    if args.command == "train-predictor":
        model, result = train_predictor(args.run_dir, steps=args.steps or 20000, **options)
    else:
        model, result = train_filter(args.run_dir, steps=args.steps or 8000, **options)
    print(f"{args.command}: step {result.step}, {result.seconds / 60:.1f} min of training in "
          f"all, {(time.perf_counter() - start) / 60:.1f} min in this call"
          + (" (stopped early; run again to continue)" if result.interrupted else ""))
    if args.out is not None:
        save_model(model, args.out, steps=result.step, seconds=round(result.seconds, 1))
        log = args.out.parent / "logs" / f"{args.out.stem}.csv"
        log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.run_dir / "log.csv", log)
        recorded = weights.record([args.out, log])
        print(f"wrote {args.out} and {log}" + (f"; recorded {recorded}" if recorded else ""))


if __name__ == "__main__":
    main()
