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

A reader decodes every stream it has, of every level, in one loop (:func:`decode_streams`):
the lanes of all streams side by side, so the whole read costs the steps of the longest lane
instead of the sum over streams (a small stream is one lane of up to 256 steps, and before
this a four-level asset's eight streams paid about 1,500 steps where 253 now do).

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
from collections.abc import Sequence
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


_BIT_WEIGHTS = np.left_shift(1, np.arange(16, dtype=np.int64))


def _read_tables(
    reader: ByteReader, tables: int, alphabet: int, prob_bits: int, what: str
) -> np.ndarray:
    """``tables`` frequency tables [tables, alphabet], each checked to sum to ``2^P``. The bits
    are unpacked once and each table's fields read with a few array calls (a stream has up to
    64 tables, and a bit-at-a-time reader was a tenth of a coded level's decode time)."""
    total = 1 << prob_bits
    per_table_max_bits = alphabet + 4 + (alphabet - 1) * 16
    available = reader.data[
        reader.position : reader.position + (tables * per_table_max_bits + 7) // 8
    ]
    bits = np.unpackbits(np.frombuffer(available, dtype=np.uint8), bitorder="little")
    freqs = np.zeros((tables, alphabet), dtype=np.int64)
    position = 0
    for table in range(tables):
        width_at = position + alphabet
        if width_at + 4 > bits.size:
            raise AssetError(f"{what} ends inside its frequency tables")
        present = np.flatnonzero(bits[position:width_at])
        if not present.size:
            raise AssetError(f"{what} has an empty frequency table")
        width = int(bits[width_at : width_at + 4] @ _BIT_WEIGHTS[:4]) + 1
        stored = present.size - 1
        position = width_at + 4 + stored * width
        if position > bits.size:
            raise AssetError(f"{what} ends inside its frequency tables")
        fields = bits[position - stored * width : position].reshape(stored, width)
        values = fields @ _BIT_WEIGHTS[:width] + 1
        last = total - int(values.sum())
        if last < 1:
            raise AssetError(f"{what} has frequencies that do not sum to 2^{prob_bits}")
        freqs[table, present[:-1]] = values
        freqs[table, present[-1]] = last
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
class ParsedStream:
    """A stream's parsed header and payload, not yet decoded: ``packed`` for raw storage, else
    the model, tables, lane states and words. ``what`` names it in errors."""

    count: int
    alphabet_bits: int
    what: str
    model: int
    packed: memoryview | None = None
    prob_bits: int = 0
    freqs: np.ndarray | None = None  # [contexts, alphabet]
    states: np.ndarray | None = None  # [K] lane states
    words: np.ndarray | None = None  # [W] 16-bit words


def parse_stream(reader: ByteReader, count: int, alphabet_bits: int) -> ParsedStream:
    """Read one stream of ``count`` symbols off ``reader``, checking everything but the
    entropy-coded data itself (that is :func:`decode_streams`' job)."""
    what = reader.what
    alphabet = 1 << alphabet_bits
    model = reader.byte()
    if model == MODEL_RAW:
        packed = reader.take(packed_index_bytes(count, alphabet_bits))
        return ParsedStream(count, alphabet_bits, what, model, packed=packed)
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
    return ParsedStream(count, alphabet_bits, what, model, None, prob_bits, freqs, states, words)


def decode_symbols(reader: ByteReader, count: int, alphabet_bits: int) -> np.ndarray:
    """Decode one stream of ``count`` symbols from ``reader`` (int64), checking everything a
    damaged file could get wrong: sizes, tables, word supply and the lanes' final states."""
    (decoded,) = decode_streams([parse_stream(reader, count, alphabet_bits)])
    if isinstance(decoded, AssetError):
        raise decoded
    return decoded


def skip_symbols(reader: ByteReader, count: int, alphabet_bits: int) -> None:
    """Move ``reader`` past one stream of ``count`` symbols without decoding it."""
    parse_stream(reader, count, alphabet_bits)


def decode_streams(streams: Sequence[ParsedStream]) -> list[np.ndarray | AssetError]:
    """Decode ``streams`` together: each one's int64 symbols, or the :class:`AssetError` its
    damaged data gives (returned, not raised, so a reader decoding several levels at once can
    still raise the first error in file order). The entropy-coded streams share one lane loop
    (:class:`_LaneBatch`), which costs the steps of the longest lane, at most
    :data:`SYMBOLS_PER_LANE`, instead of the sum of every stream's steps."""
    coded = [stream for stream in streams if stream.packed is None]
    decoded = iter(_LaneBatch(coded).decode() if coded else [])
    return [
        next(decoded)
        if stream.packed is None
        else unpack_indices(stream.packed, stream.count, stream.alphabet_bits)
        for stream in streams
    ]


class _LaneBatch:
    """The lanes of several entropy-coded streams, decoded in one loop of array operations.

    Every stream's tables go into one table of *slots* (a stream's block holds, per context,
    ``2^P`` slots: a state's low ``P`` bits index its context's row), giving for each slot the
    symbol, the frequency and the bias ``slot - start`` that turn the state back, and the block
    offset of the next context (the symbol's row for order 1, the stream's only row for order
    0). A lane keeps its stream's context offset, mask and shift, so a step is the same few
    array operations whatever mixture of streams and precisions the batch holds.

    Lanes sit stream after stream, in each stream's lane order, behind one guard lane. A lane
    whose symbols are done is frozen onto the *sink* slot (frequency 1, bias 0, shift 0: its
    state no longer changes and never asks for a word), so every step works on all lanes and
    the final states are checked once at the end. Refill words come from the streams' word
    arrays laid end to end: at each step a stream's refilling lanes take its next words in lane
    order, so a lane's word is its stream's cursor plus its rank among the stream's refilling
    lanes, which one cumulative sum over all lanes gives (the guard lane, which never refills,
    makes the sum's value before the first stream 0). A damaged stream may read past its words
    into the next stream's (or be clipped at the end); its own count of words taken then
    differs from what it holds, which is checked after the loop, and no other stream is
    affected.
    """

    def __init__(self, streams: Sequence[ParsedStream]) -> None:
        self.streams = streams
        tables = [_slot_tables(stream) for stream in streams]
        offsets = np.cumsum([0] + [table[0].size for table in tables])
        self.sink = int(offsets[-1])
        next_context = []
        for stream, (symbols, *_), offset in zip(streams, tables, offsets, strict=False):
            if stream.model == MODEL_ORDER1:
                next_context.append(offset + symbols * (1 << stream.prob_bits))
            else:
                next_context.append(np.full(symbols.size, offset))
        self.slot_symbols = np.concatenate([*(table[0] for table in tables), [0]])
        self.slot_freqs = np.concatenate([*(table[1] for table in tables), [1]])
        self.slot_biases = np.concatenate([*(table[2] for table in tables), [0]])
        self.next_context = np.concatenate([*next_context, [self.sink]])
        self.order1 = any(stream.model == MODEL_ORDER1 for stream in streams)

        states, words = [], []
        for stream in streams:
            assert stream.states is not None and stream.words is not None
            states.append(stream.states)
            words.append(stream.words)
        lanes = np.array([lane_states.size for lane_states in states])
        self.lane_counts = lanes
        self.first_lanes = 1 + np.cumsum(lanes) - lanes  # lane 0 is the guard
        self.lengths = [
            -(-stream.count // size) for stream, size in zip(streams, lanes, strict=True)
        ]
        self.freeze: dict[int, list[int]] = {}  # step -> lanes whose symbols end there
        for stream, first, size, length in zip(
            streams, self.first_lanes, lanes, self.lengths, strict=True
        ):
            last_lane_length = stream.count - (size - 1) * length
            self.freeze.setdefault(length, []).extend(range(first, first + size - 1))
            self.freeze.setdefault(last_lane_length, []).append(first + size - 1)
        guard = np.zeros(1, dtype=np.int64)
        self.states = np.concatenate([[STATE_LOW], *states])
        self.masks = np.concatenate(
            [guard, np.repeat([(1 << s.prob_bits) - 1 for s in streams], lanes)]
        )
        self.shifts = np.concatenate([guard, np.repeat([s.prob_bits for s in streams], lanes)])
        self.contexts = np.concatenate([[self.sink], np.repeat(offsets[:-1], lanes)])
        self.lane_stream = np.concatenate([guard, np.repeat(np.arange(len(streams)), lanes)])
        self.word_starts = np.cumsum([0] + [stream_words.size for stream_words in words])
        self.words = np.concatenate([*words, [0]])  # a spare word: clipped reads always find one

    def decode(self) -> list[np.ndarray | AssetError]:
        x, context = self.states.copy(), self.contexts.copy()
        masks, shifts = self.masks.copy(), self.shifts.copy()
        slot_freqs, slot_biases, next_context = self.slot_freqs, self.slot_biases, self.next_context
        state_low = np.full(x.size, STATE_LOW)
        word_bits = np.full(x.size, WORD_BITS)
        lane_stream, words = self.lane_stream, self.words
        # ranks just before each stream's first lane (the guard lane's is 0) and at its last
        last = self.first_lanes + self.lane_counts - 1
        before = self.first_lanes - 1
        cursor = self.word_starts[:-1] - 1  # word before each stream's next one
        slots = np.empty((max(self.lengths), x.size), dtype=np.int64)
        for step, slot in enumerate(slots):
            frozen = self.freeze.get(step)
            if frozen is not None:
                context[frozen], masks[frozen], shifts[frozen] = self.sink, 0, 0
            # a step of all lanes: the per-call overhead of numpy is what it costs
            np.bitwise_and(x, masks, out=slot)
            slot += context
            if self.order1:
                context = next_context[slot]
            x = x >> shifts
            x *= slot_freqs[slot]
            x += slot_biases[slot]
            refill = x < state_low
            ranks = refill.cumsum()
            base = cursor - ranks[before]
            position = base[lane_stream]
            position += ranks
            fresh = x << word_bits
            fresh |= words.take(position, mode="clip")
            np.copyto(x, fresh, where=refill)
            cursor = base + ranks[last]
        return self._results(slots, x, cursor + 1 - self.word_starts[:-1])

    def _results(
        self, slots: np.ndarray, x: np.ndarray, taken_words: np.ndarray
    ) -> list[np.ndarray | AssetError]:
        results: list[np.ndarray | AssetError] = []
        for index, stream in enumerate(self.streams):
            lanes = slice(
                self.first_lanes[index], self.first_lanes[index] + self.lane_counts[index]
            )
            supplied = self.word_starts[index + 1] - self.word_starts[index]
            if taken_words[index] > supplied:
                results.append(AssetError(f"{stream.what} runs out of entropy-coded words"))
            elif taken_words[index] < supplied or (x[lanes] != STATE_LOW).any():
                results.append(
                    AssetError(f"{stream.what} entropy-coded data does not decode cleanly")
                )
            else:
                lane_slots = slots[: self.lengths[index], lanes]
                results.append(self.slot_symbols[lane_slots.T.ravel()[: stream.count]])
        return results


def _slot_tables(stream: ParsedStream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot of ``stream``'s tables (context-major, ``2^P`` slots a context): the symbol,
    its frequency and the bias ``slot - start`` of the decoding step."""
    assert stream.freqs is not None
    table_count, alphabet = stream.freqs.shape
    flat = stream.freqs.ravel()
    symbols = np.repeat(np.tile(np.arange(alphabet), table_count), flat)
    starts = np.repeat((np.cumsum(stream.freqs, axis=1) - stream.freqs).ravel(), flat)
    biases = np.tile(np.arange(1 << stream.prob_bits), table_count) - starts
    return symbols, np.repeat(flat, flat), biases
