"""The entropy coder of the ``rans`` chunk codec: exact round trips at every lane boundary and
alphabet, sizes close to the model's entropy, damaged streams refused as ``AssetError``."""

from __future__ import annotations

import numpy as np
import pytest

from core.asset.vbnf.rans import (
    MODEL_ORDER0,
    MODEL_ORDER1,
    MODEL_RAW,
    SYMBOLS_PER_LANE,
    ByteReader,
    ParsedStream,
    decode_streams,
    decode_symbols,
    encode_symbols,
    parse_stream,
    quantize_counts,
    skip_symbols,
)
from core.errors import AssetError


def skewed(count: int, bits: int, seed: int, concentration: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(1 << bits, concentration))
    return rng.choice(1 << bits, size=count, p=probabilities)


def round_trip(symbols: np.ndarray, bits: int) -> bytes:
    coded = encode_symbols(symbols, bits)
    reader = ByteReader(coded + b"tail", "test stream")
    np.testing.assert_array_equal(decode_symbols(reader, symbols.size, bits), symbols)
    assert reader.position == len(coded)
    skipper = ByteReader(coded, "test stream")
    skip_symbols(skipper, symbols.size, bits)
    assert skipper.position == len(coded)
    return coded


@pytest.mark.parametrize(
    "count",
    [0, 1, 2, 7, SYMBOLS_PER_LANE - 1, SYMBOLS_PER_LANE, SYMBOLS_PER_LANE + 1, 5 * 513 + 3],
)
@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_round_trip_at_lane_boundaries(count: int, bits: int) -> None:
    round_trip(skewed(count, bits, seed=count + bits), bits)


def test_order0_codes_close_to_the_entropy() -> None:
    symbols = skewed(200_000, 4, seed=1)
    coded = round_trip(symbols, 4)
    assert coded[0] == MODEL_ORDER0
    counts = np.bincount(symbols, minlength=16)
    p = counts[counts > 0] / symbols.size
    entropy_bytes = -(counts[counts > 0] * np.log2(p)).sum() / 8
    lane_states_bytes = 4 * (200_000 // SYMBOLS_PER_LANE + 1)
    assert entropy_bytes < len(coded) < 1.01 * entropy_bytes + lane_states_bytes + 64


def test_order1_is_chosen_for_a_markov_stream() -> None:
    rng = np.random.default_rng(2)
    transitions = rng.dirichlet(np.full(16, 0.2), size=16)
    symbols = np.zeros(30_000, dtype=np.int64)
    draws = rng.random(symbols.size)
    cumulative = np.cumsum(transitions, axis=1)
    for i in range(1, symbols.size):
        symbols[i] = min(int(np.searchsorted(cumulative[symbols[i - 1]], draws[i])), 15)
    coded = round_trip(symbols, 4)
    assert coded[0] == MODEL_ORDER1


def test_uniform_symbols_are_stored_raw() -> None:
    symbols = np.random.default_rng(3).integers(0, 256, size=3000)
    coded = round_trip(symbols, 8)
    assert coded[0] == MODEL_RAW and len(coded) == 3001


def test_a_single_symbol_costs_no_words() -> None:
    symbols = np.full(100_000, 5)
    coded = round_trip(symbols, 4)
    assert len(coded) < 4 * (100_000 // SYMBOLS_PER_LANE + 1) + 16  # the lane states only


def test_quantized_frequencies_keep_every_symbol() -> None:
    counts = np.array([10**6, 1, 0, 1, 3])
    freqs = quantize_counts(counts, 6)
    assert freqs.sum() == 64 and (freqs[counts > 0] >= 1).all() and freqs[2] == 0


def test_damaged_streams_are_asset_errors() -> None:
    symbols = skewed(3000, 4, seed=4)
    coded = encode_symbols(symbols, 4)
    assert coded[0] != MODEL_RAW
    rng = np.random.default_rng(5)
    refused = 0
    for _ in range(300):
        data = bytearray(coded)
        data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
        try:
            decoded = decode_symbols(ByteReader(bytes(data), "damaged"), symbols.size, 4)
        except AssetError:
            refused += 1
        else:
            assert decoded.shape == symbols.shape
    for size in range(len(coded)):
        with pytest.raises(AssetError):
            decode_symbols(ByteReader(coded[:size], "short"), symbols.size, 4)
    assert refused > 250  # the lanes' final states catch nearly every flip


def mixed_streams() -> list[tuple[np.ndarray, int, bytes]]:
    """Streams of every kind a chunk batch meets: order 0, order 1 and raw, one lane or many,
    short last lanes, different alphabets and precisions."""
    rng = np.random.default_rng(6)
    markov = np.cumsum(rng.integers(0, 2, size=4000)) % 16  # order 1 wins
    cases = [
        (skewed(1, 4, seed=7), 4),
        (skewed(25, 8, seed=8, concentration=0.05), 8),
        (skewed(SYMBOLS_PER_LANE * 3 + 17, 4, seed=9), 4),
        (markov, 4),
        (rng.integers(0, 256, size=600), 8),  # uniform: raw
        (np.full(700, 3), 2),  # one symbol: no words at all
        (skewed(5 * SYMBOLS_PER_LANE, 3, seed=10), 3),
    ]
    return [(symbols, bits, encode_symbols(symbols, bits)) for symbols, bits in cases]


def parsed(coded: bytes, count: int, bits: int) -> ParsedStream:
    return parse_stream(ByteReader(coded, f"stream of {count}"), count, bits)


def test_streams_decoded_together_are_decoded_exactly() -> None:
    streams = mixed_streams()
    assert {coded[0] for _, _, coded in streams} == {MODEL_ORDER0, MODEL_ORDER1, MODEL_RAW}
    batch = decode_streams([parsed(coded, symbols.size, bits) for symbols, bits, coded in streams])
    for (symbols, _, _), decoded in zip(streams, batch, strict=True):
        assert isinstance(decoded, np.ndarray)
        np.testing.assert_array_equal(decoded, symbols)


def test_a_damaged_stream_fails_alone_in_a_batch() -> None:
    """A flip that makes one stream fail on its own gives that stream's error in a batch, and
    leaves every other stream of the batch exact, whatever its words are read into."""
    streams = mixed_streams()
    rng = np.random.default_rng(11)
    failures = 0
    for target in (2, 3, 6):
        symbols, bits, coded = streams[target]
        for _ in range(40):
            data = bytearray(coded)
            data[int(rng.integers(len(data) // 2, len(data)))] ^= int(rng.integers(1, 256))
            try:
                damaged = parsed(bytes(data), symbols.size, bits)
                decode_symbols(ByteReader(bytes(data), "alone"), symbols.size, bits)
            except AssetError:
                pass
            else:
                continue  # the flip missed, or it fails already while parsing
            failures += 1
            batch = [parsed(c, s.size, b) for s, b, c in streams]
            batch[target] = damaged
            for index, decoded in enumerate(decode_streams(batch)):
                if index == target:
                    assert isinstance(decoded, AssetError)
                    assert str(decoded).startswith(f"stream of {symbols.size}")
                else:
                    np.testing.assert_array_equal(decoded, streams[index][0])
    assert failures > 60
