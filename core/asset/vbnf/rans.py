"""Interleaved rANS entropy coding of small-alphabet symbol streams, numpy only.

A VQ-AD level is mostly ``b``-bit codebook indices and one-byte octree child masks, and neither
is uniform: some codebook entries are used far more than others, a child mask is one of the few
shapes a surface makes. A static model per stream (frequencies quantised to ``2^P``, sent ahead
of the data) captures that; rANS codes to within a fraction of a percent of the model's entropy.

Decoding must be fast in numpy, where a Python loop over symbols would crawl. So a stream is cut
into ``K`` lanes of consecutive symbols, each an independent rANS state, and the decoder runs one
step per symbol *position*, doing that step for all lanes at once with array operations: the cost
is ``S = ceil(n / K)`` steps of a few vectorised calls. The lanes share one stream of 16-bit
words (the encoder emits each step's words in reverse lane order, so after reversing the whole
stream the decoder reads them in lane order). Each lane costs its 4-byte final state, hence
:data:`SYMBOLS_PER_LANE`: at 256 symbols a lane the states are about 3.5 % of a coded 4-bit
index stream, and a stream takes at most 256 steps (on the demo scene's finest level, 18k
indices: 7,215 bytes at 512 a lane, 7,327 at 256, 7,540 at 128; the steps' fixed cost is what
bounds the speed of such a level, so 256 buys twice the speed for 1.5 % more bytes).

Contexts, measured as conditional entropies on a trained 4-bit asset (levels 3..6, finest level
26k corners): the level's own frequencies 3.33 bits per index, given the previous corner in
Morton order 3.15, given the same corner's index at the coarser level 3.10. The gains of the
last two are mostly eaten by their 2^b tables, so only the previous-symbol context (order 1,
which lanes of consecutive symbols decode in parallel) is offered; the encoder picks per stream
whichever of order 0, order 1 and raw storage is smallest.

Stream layout (see ``docs/vbnf-format.md``)::

    u8 model (0 order 0, 1 order 1, 2 raw), then for models 0 and 1:
    u8 P (probability bits), varint K (lanes), frequency tables (one, or one per context),
    K x u32 final lane states, varint W (words), W x u16 words

Raw storage is the symbols packed at the alphabet's bit width (as ``bitpack``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import AssetError
from .bitpack import pack_indices, unpack_indices
from .spec import packed_index_bytes

STATE_LOW = 1 << 16  # lane states live in [STATE_LOW, 2^32); renormalisation moves 16 bits
WORD_BITS = 16
MIN_PROB_BITS = 6
MAX_PROB_BITS = 14
SYMBOLS_PER_LANE = 256
MODEL_ORDER0, MODEL_ORDER1, MODEL_RAW = 0, 1, 2
MAX_ORDER1_BITS = 6  # wider alphabets: a table per context costs more than it could save


class _Bits:
    """Little-endian bit writer for the frequency tables (small; plain Python is fine)."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def write(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits

    def tobytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


class ByteReader:
    """Sequential reads from a coded chunk; every overrun is an :class:`AssetError`."""

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self.data = memoryview(data)
        self.position = 0
        self.what = what

    def take(self, size: int) -> memoryview:
        if size < 0 or self.position + size > len(self.data):
            raise AssetError(f"{self.what} ends inside its entropy-coded data")
        piece = self.data[self.position : self.position + size]
        self.position += size
        return piece

    def byte(self) -> int:
        return int(self.take(1)[0])

    def varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise AssetError(f"{self.what} has an overlong length field")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def quantize_counts(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """Frequencies summing to ``2^prob_bits``, every occurring symbol at least 1, close to the
    counts' proportions (the rounding error goes to the most frequent symbol, where it costs
    least)."""
    total = 1 << prob_bits
    counts = np.asarray(counts, dtype=np.int64)
    freqs = np.where(counts > 0, np.maximum(1, np.round(counts * total / counts.sum())), 0)
    freqs = freqs.astype(np.int64)
    while freqs.sum() != total:
        excess = int(freqs.sum() - total)
        order = np.argsort(-freqs, kind="stable")
        for symbol in order:
            if excess == 0:
                break
            step = min(excess, int(freqs[symbol]) - 1) if excess > 0 else excess
            freqs[symbol] -= step
            excess -= step
    return freqs


def _table_bits(freqs: np.ndarray) -> int:
    """Size of :func:`_write_table`'s output, in bits."""
    present = int((freqs > 0).sum())
    return freqs.size + 4 + max(present - 1, 0) * _freq_width(freqs)


def _freq_width(freqs: np.ndarray) -> int:
    return max(int(freqs.max() - 1).bit_length(), 1) if freqs.size else 1


def _write_table(bits: _Bits, freqs: np.ndarray) -> None:
    """A presence bit per symbol, the width of the stored frequencies (4 bits), then each
    present symbol's frequency minus 1 except the last one's (it is what remains of 2^P)."""
    present = np.flatnonzero(freqs)
    for symbol in range(freqs.size):
        bits.write(int(freqs[symbol] > 0), 1)
    width = _freq_width(freqs)
    bits.write(width - 1, 4)
    for symbol in present[:-1]:
        bits.write(int(freqs[symbol]) - 1, width)


def _read_tables(
    reader: ByteReader, tables: int, alphabet: int, prob_bits: int, what: str
) -> np.ndarray:
    """``tables`` frequency tables [tables, alphabet], each checked to sum to ``2^P``."""
    total = 1 << prob_bits
    per_table_max = alphabet + 4 + (alphabet - 1) * 16
    data = bytes(reader.data[reader.position : reader.position + (tables * per_table_max + 7) // 8])
    value = int.from_bytes(data, "little")
    position = 0

    def read(bits: int) -> int:
        nonlocal position
        if position + bits > 8 * len(data):
            raise AssetError(f"{what} ends inside its frequency tables")
        field = (value >> position) & ((1 << bits) - 1)
        position += bits
        return field

    freqs = np.zeros((tables, alphabet), dtype=np.int64)
    for table in range(tables):
        present = [symbol for symbol in range(alphabet) if read(1)]
        width = read(4) + 1
        if not present:
            raise AssetError(f"{what} has an empty frequency table")
        for symbol in present[:-1]:
            freqs[table, symbol] = read(width) + 1
        freqs[table, present[-1]] = total - int(freqs[table].sum())
        if freqs[table, present[-1]] < 1:
            raise AssetError(f"{what} has frequencies that do not sum to 2^{prob_bits}")
    reader.take((position + 7) // 8)
    return freqs


def _contexts(symbols: np.ndarray, lanes: int, model: int) -> np.ndarray:
    """The context of each symbol: 0 for order 0; for order 1 the previous symbol in its lane
    (0 for a lane's first symbol)."""
    if model == MODEL_ORDER0:
        return np.zeros(symbols.size, dtype=np.int64)
    per_lane = -(-symbols.size // lanes)
    context = np.empty(symbols.size, dtype=np.int64)
    context[0] = 0
    context[1:] = symbols[:-1]
    context[::per_lane] = 0
    return context


def lane_count(symbol_count: int) -> int:
    return max(1, -(-symbol_count // SYMBOLS_PER_LANE))


def _coded_bits(counts: np.ndarray, freqs: np.ndarray, prob_bits: int) -> float:
    used = counts > 0
    return float(-(counts[used] * np.log2(freqs[used] / (1 << prob_bits))).sum())


def _model_cost(
    symbols: np.ndarray, alphabet: int, lanes: int, model: int
) -> tuple[float, int, np.ndarray]:
    """Estimated size in bits of coding ``symbols`` with ``model``: data, tables, lane states;
    with the best probability precision and its quantised tables [contexts, alphabet]."""
    contexts = _contexts(symbols, lanes, model)
    table_count = 1 if model == MODEL_ORDER0 else alphabet
    counts = np.bincount(contexts * alphabet + symbols, minlength=table_count * alphabet)
    counts = counts.reshape(table_count, alphabet)
    counts[counts.sum(axis=1) == 0, 0] = 1  # unused contexts still carry a valid table
    distinct = int((counts > 0).sum(axis=1).max())
    best: tuple[float, int, np.ndarray] | None = None
    for prob_bits in range(max(MIN_PROB_BITS, math.ceil(math.log2(distinct))), MAX_PROB_BITS + 1):
        freqs = np.stack([quantize_counts(row, prob_bits) for row in counts])
        bits = sum(
            _coded_bits(row_counts, row_freqs, prob_bits) + _table_bits(row_freqs)
            for row_counts, row_freqs in zip(counts, freqs, strict=True)
        )
        bits += 32 * lanes + 16  # states, rounding of the word stream
        if best is None or bits < best[0]:
            best = (bits, prob_bits, freqs)
    assert best is not None
    return best


def encode_symbols(symbols: np.ndarray, alphabet_bits: int) -> bytes:
    """Code ``symbols`` (integers below ``2^alphabet_bits``) as one self-delimiting stream,
    with whichever of order 0, order 1 and raw storage is smallest."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    alphabet = 1 << alphabet_bits
    raw = bytes([MODEL_RAW]) + pack_indices(symbols, alphabet_bits)
    if symbols.size == 0:
        return raw
    lanes = lane_count(symbols.size)
    models = (MODEL_ORDER0, MODEL_ORDER1) if alphabet_bits <= MAX_ORDER1_BITS else (MODEL_ORDER0,)
    candidates = [(*_model_cost(symbols, alphabet, lanes, model), model) for model in models]
    _, prob_bits, freqs, model = min(candidates, key=lambda candidate: candidate[0])
    coded = _encode(symbols, alphabet, lanes, model, prob_bits, freqs)
    return coded if len(coded) < len(raw) else raw


def _encode(
    symbols: np.ndarray,
    alphabet: int,
    lanes: int,
    model: int,
    prob_bits: int,
    freqs: np.ndarray,
) -> bytes:
    cumulative = np.cumsum(freqs, axis=1) - freqs
    flat_freqs, flat_starts = freqs.ravel(), cumulative.ravel()
    table_rows = _contexts(symbols, lanes, model) * alphabet + symbols
    per_lane = -(-symbols.size // lanes)
    padded = np.full(lanes * per_lane, -1, dtype=np.int64)
    padded[: symbols.size] = table_rows
    grid = padded.reshape(lanes, per_lane)
    states = np.full(lanes, STATE_LOW, dtype=np.uint64)
    words: list[np.ndarray] = []
    shift = np.uint64(WORD_BITS)
    for step in range(per_lane - 1, -1, -1):
        rows = grid[:, step]
        active = rows >= 0
        x = states[active]
        freq = flat_freqs[rows[active]].astype(np.uint64)
        start = flat_starts[rows[active]].astype(np.uint64)
        emit = x >= (freq << np.uint64(32 - prob_bits))
        words.append((x[emit] & np.uint64(0xFFFF))[::-1].astype("<u2"))
        x[emit] >>= shift
        x = (x // freq << np.uint64(prob_bits)) + x % freq + start
        states[active] = x
    stream = np.concatenate(words)[::-1] if words else np.zeros(0, "<u2")
    bits = _Bits()
    for table in freqs:
        _write_table(bits, table)
    return b"".join(
        [
            bytes([model, prob_bits]),
            _varint(lanes),
            bits.tobytes(),
            states.astype("<u4").tobytes(),
            _varint(stream.size),
            np.ascontiguousarray(stream, dtype="<u2").tobytes(),
        ]
    )


@dataclass(frozen=True)
class _Stream:
    """A coded stream's parsed header and payload (``packed`` for raw storage, else the rest)."""

    model: int
    packed: memoryview | None = None
    prob_bits: int = 0
    freqs: np.ndarray | None = None  # [contexts, alphabet]
    states: np.ndarray | None = None  # [K] lane states
    words: np.ndarray | None = None  # [W] 16-bit words


def _parse(reader: ByteReader, count: int, alphabet_bits: int) -> _Stream:
    what = reader.what
    alphabet = 1 << alphabet_bits
    model = reader.byte()
    if model == MODEL_RAW:
        return _Stream(model, packed=reader.take(packed_index_bytes(count, alphabet_bits)))
    if model not in (MODEL_ORDER0, MODEL_ORDER1):
        raise AssetError(f"{what} uses unknown entropy model {model}")
    prob_bits = reader.byte()
    if not MIN_PROB_BITS <= prob_bits <= MAX_PROB_BITS:
        raise AssetError(f"{what} declares {prob_bits} probability bits")
    lanes = reader.varint()
    if count == 0 or not 1 <= lanes <= count or (lanes - 1) * -(-count // lanes) >= count:
        raise AssetError(f"{what} declares {lanes} lanes for {count} symbols")
    tables = 1 if model == MODEL_ORDER0 else alphabet
    freqs = _read_tables(reader, tables, alphabet, prob_bits, what)
    states = np.frombuffer(reader.take(4 * lanes), dtype="<u4").astype(np.int64)
    if (states < STATE_LOW).any():
        raise AssetError(f"{what} has an invalid rANS state")
    word_count = reader.varint()
    words = np.frombuffer(reader.take(2 * word_count), dtype="<u2").astype(np.int64)
    return _Stream(model, None, prob_bits, freqs, states, words)


def decode_symbols(reader: ByteReader, count: int, alphabet_bits: int) -> np.ndarray:
    """Decode one stream of ``count`` symbols from ``reader`` (int64), checking everything a
    damaged file could get wrong: sizes, tables, word supply and the lanes' final states."""
    stream = _parse(reader, count, alphabet_bits)
    if stream.packed is not None:
        return unpack_indices(stream.packed, count, alphabet_bits)
    assert stream.freqs is not None and stream.states is not None and stream.words is not None
    return _decode(
        stream.states,
        stream.words,
        stream.freqs,
        count,
        stream.model,
        stream.prob_bits,
        reader.what,
    )


def skip_symbols(reader: ByteReader, count: int, alphabet_bits: int) -> None:
    """Move ``reader`` past one stream of ``count`` symbols without decoding it."""
    _parse(reader, count, alphabet_bits)


def _decode(
    states: np.ndarray,
    words: np.ndarray,
    freqs: np.ndarray,
    count: int,
    model: int,
    prob_bits: int,
    what: str,
) -> np.ndarray:
    """The lane-parallel decoder. Everything a step needs is looked up by the state's *slot*
    (context * 2^P + low P bits): the frequency and the bias ``slot - start`` that turn the
    state back, and for order 1 the next context; symbols are read off the slots at the end.
    That keeps a step at about ten array operations on ``K`` lanes."""
    lanes, alphabet = states.size, freqs.shape[1]
    total = 1 << prob_bits
    per_lane = -(-count // lanes)
    last_lane_length = count - (lanes - 1) * per_lane
    slot_symbols = np.concatenate([np.repeat(np.arange(alphabet), row) for row in freqs])
    slot_freqs = np.concatenate([np.repeat(row, row) for row in freqs])
    starts = np.concatenate([np.repeat(np.cumsum(row) - row, row) for row in freqs])
    slot_biases = np.tile(np.arange(total), freqs.shape[0]) - starts
    next_context = (slot_symbols * total).astype(np.int32) if model == MODEL_ORDER1 else None
    slots = np.empty((per_lane, lanes), dtype=np.int32)  # context * 2^P + slot < 2^20
    x = states
    context = np.zeros(lanes, dtype=np.int32)
    scratch = np.empty(lanes, dtype=np.int64)
    position = 0
    for step in range(per_lane):
        if step == last_lane_length:  # the last lane is done: check and drop it
            if x[-1] != STATE_LOW:
                raise AssetError(f"{what} entropy-coded data does not decode cleanly")
            x, context, scratch = x[:-1], context[:-1], scratch[:-1]
        # array methods and ufuncs with out=: the per-call overhead is what a step costs
        slot = slots[step, : x.size]
        np.bitwise_and(x, total - 1, out=slot)
        if next_context is not None:
            slot += context
            next_context.take(slot, out=context)
        x >>= prob_bits
        x *= slot_freqs.take(slot, out=scratch)
        x += slot_biases.take(slot, out=scratch)
        (refill,) = (x < STATE_LOW).nonzero()
        if refill.size:
            if position + refill.size > words.size:
                raise AssetError(f"{what} runs out of entropy-coded words")
            x[refill] = (x[refill] << WORD_BITS) | words[position : position + refill.size]
            position += refill.size
    if position != words.size or (x != STATE_LOW).any():
        raise AssetError(f"{what} entropy-coded data does not decode cleanly")
    if last_lane_length < per_lane:
        slots[last_lane_length:, -1] = 0
    return slot_symbols[slots.T.ravel()[:count]].astype(np.int64)
