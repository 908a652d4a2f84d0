"""Masking (RFC 6455 section 5.3): the pure Python fallbacks and the C accelerator agree.

Every property runs against both implementations. The C one is skipped when the extension
was not built, except under CI (``CI`` set), where a missing extension is a failure: CI
installs the package with a compiler, so the accelerator must be there.
"""

from __future__ import annotations

import array
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rue_trio.protocol import _mask

MaskFunction = Callable[[bytes | bytearray | memoryview, bytes], bytes]
UnmaskAtFunction = Callable[[bytes | bytearray | memoryview, int, int], bytes]


def _load_speedups() -> ModuleType:
    try:
        return importlib.import_module("rue_trio.protocol._speedups")
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the C extension rue_trio.protocol._speedups is not built: {exc}")
        pytest.skip("the C extension rue_trio.protocol._speedups is not built")


@pytest.fixture(scope="module", params=["pure", "c"])
def apply_mask(request: pytest.FixtureRequest) -> MaskFunction:
    if request.param == "pure":
        return _mask.PURE_PYTHON_apply_mask
    function: MaskFunction = _load_speedups().apply_mask
    return function


@pytest.fixture(scope="module", params=["pure", "c"])
def unmask_at(request: pytest.FixtureRequest) -> UnmaskAtFunction:
    if request.param == "pure":
        return _mask.PURE_PYTHON_unmask_at
    function: UnmaskAtFunction = _load_speedups().unmask_at
    return function


def reference(data: bytes, mask: bytes) -> bytes:
    """The section 5.3 definition, one octet at a time: j = i MOD 4, octet ^ key[j]."""
    return bytes(octet ^ mask[i % 4] for i, octet in enumerate(data))


def _as_buffer(kind: str, data: bytes) -> bytes | bytearray | memoryview:
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    # A contiguous view into the middle of a larger buffer: the start is not aligned.
    return memoryview(b"\xaa" + data + b"\xbb")[1:-1]


masks = st.binary(min_size=4, max_size=4)
buffer_kinds = st.sampled_from(["bytes", "bytearray", "memoryview", "offset-view"])


@given(data=st.binary(max_size=2048), mask=masks, kind=buffer_kinds)
def test_client_mask_matches_bytewise_reference(
    apply_mask: MaskFunction, data: bytes, mask: bytes, kind: str
) -> None:
    """Section 5.3: every octet i is XOR-ed with octet i MOD 4 of the key, whatever the buffer."""
    result = apply_mask(_as_buffer(kind, data), mask)
    assert type(result) is bytes
    assert result == reference(data, mask)


@given(data=st.binary(max_size=2048), mask=masks)
def test_server_unmask_restores_payload(
    apply_mask: MaskFunction, data: bytes, mask: bytes
) -> None:
    """Section 5.3: the same algorithm unmasks, whatever the direction."""
    assert apply_mask(apply_mask(data, mask), mask) == data


@pytest.mark.parametrize("size", range(18))
def test_client_mask_small_sizes_match_reference(apply_mask: MaskFunction, size: int) -> None:
    """Lengths 0 to 17 cover every tail after the 4- and 8-byte strides."""
    data = bytes(range(1, size + 1))
    mask = b"\x01\x80\xfe\x7f"
    assert apply_mask(data, mask) == reference(data, mask)
    assert apply_mask(bytearray(data), mask) == reference(data, mask)


@pytest.mark.parametrize("size", [125, 126, 447, 448, 449, 4093, 65536, 65539, (1 << 20) + 5])
def test_client_mask_large_sizes_match_reference(apply_mask: MaskFunction, size: int) -> None:
    """Sizes around the length encodings, the pure path's switch, and past a mebibyte."""
    data = os.urandom(size)
    mask = os.urandom(4)
    assert apply_mask(data, mask) == reference(data, mask)


def test_client_mask_every_key_byte_on_long_payload(apply_mask: MaskFunction) -> None:
    """Every key byte value in every key position, on a payload past the pure path's switch."""
    data = bytes(range(256)) * 4
    for k in range(256):
        mask = bytes((k, 255 - k, k ^ 0x55, k ^ 0xAA))
        assert apply_mask(data, mask) == reference(data, mask)


def test_client_mask_accepts_typed_array(apply_mask: MaskFunction) -> None:
    """Any C-contiguous buffer is masked by its bytes, not by its items."""
    items = array.array("I", range(1000))
    mask = b"\x10\x20\x30\x40"
    assert apply_mask(items, mask) == reference(items.tobytes(), mask)  # type: ignore[arg-type]


def test_client_mask_returns_new_bytes(apply_mask: MaskFunction) -> None:
    data = bytearray(b"payload!")
    result = apply_mask(data, b"\x00\x00\x00\x00")
    data[0] = 0
    assert result == b"payload!"


@pytest.mark.parametrize("mask", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
@pytest.mark.parametrize("size", [3, 1000])
def test_client_mask_rejects_key_not_four_bytes(
    apply_mask: MaskFunction, mask: bytes, size: int
) -> None:
    """Section 5.3: the masking key is exactly 32 bits."""
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"x" * size, mask)


def test_client_mask_rejects_non_contiguous_buffer(apply_mask: MaskFunction) -> None:
    with pytest.raises(BufferError):
        apply_mask(memoryview(b"abcdefgh")[::2], b"\x01\x02\x03\x04")


def test_client_mask_rejects_non_buffer(apply_mask: MaskFunction) -> None:
    with pytest.raises(TypeError):
        apply_mask("text", b"\x01\x02\x03\x04")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        apply_mask(b"data", None)  # type: ignore[arg-type]


@given(
    prefix=st.binary(max_size=20),
    mask=masks,
    data=st.binary(max_size=1200),
    suffix=st.binary(max_size=20),
    kind=buffer_kinds,
)
def test_server_unmask_at_matches_reference(
    unmask_at: UnmaskAtFunction, prefix: bytes, mask: bytes, data: bytes, suffix: bytes, kind: str
) -> None:
    """Section 5.2: the masking key sits right before the payload it masks."""
    wire = prefix + mask + reference(data, mask) + suffix
    start = len(prefix) + 4
    result = unmask_at(_as_buffer(kind, wire), start, start + len(data))
    assert type(result) is bytes
    assert result == data


def test_server_unmask_at_counts_bytes_of_typed_array(unmask_at: UnmaskAtFunction) -> None:
    items = array.array("I", range(100))
    raw = items.tobytes()
    expected = reference(raw[8:301], raw[4:8])
    assert unmask_at(items, 8, 301) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "end"), [(3, 8), (0, 0), (-1, 4), (6, 5), (4, 11), (4, 1 << 70), (1 << 70, 1 << 71)]
)
def test_server_unmask_at_rejects_out_of_range(
    unmask_at: UnmaskAtFunction, start: int, end: int
) -> None:
    with pytest.raises(ValueError, match="start <= end"):
        unmask_at(bytearray(10), start, end)


def test_server_unmask_at_accepts_empty_payload_at_end(unmask_at: UnmaskAtFunction) -> None:
    assert unmask_at(b"\x01\x02\x03\x04", 4, 4) == b""


def test_server_unmask_at_rejects_bad_arguments(unmask_at: UnmaskAtFunction) -> None:
    with pytest.raises(BufferError):
        unmask_at(memoryview(bytes(20))[::2], 4, 6)
    with pytest.raises(TypeError):
        unmask_at("not a buffer", 4, 6)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unmask_at(bytes(8), 4.0, 6)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unmask_at(bytes(8), 4, "6")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [("apply_mask", (b"data",), 2), ("unmask_at", (b"data", 4), 3)],
)
def test_client_speedups_reject_wrong_argument_count(
    name: str, args: tuple[object, ...], expected: int
) -> None:
    function = getattr(_load_speedups(), name)
    with pytest.raises(TypeError, match=f"exactly {expected} positional arguments"):
        function(*args)


def _fresh_mask_module() -> ModuleType:
    """Execute _mask.py again as a new module object, leaving the imported one alone."""
    spec = importlib.util.find_spec("rue_trio.protocol._mask")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_selection_prefers_speedups(monkeypatch: pytest.MonkeyPatch) -> None:
    speedups = _load_speedups()
    monkeypatch.delenv("RUE_TRIO_NO_SPEEDUPS", raising=False)
    module = _fresh_mask_module()
    assert module.HAS_SPEEDUPS is True
    assert module.apply_mask is speedups.apply_mask
    assert module.unmask_at is speedups.unmask_at


@pytest.mark.parametrize("value", ["1", "yes"])
def test_client_selection_honours_no_speedups_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RUE_TRIO_NO_SPEEDUPS", value)
    module = _fresh_mask_module()
    assert module.HAS_SPEEDUPS is False
    assert module.apply_mask is module.PURE_PYTHON_apply_mask
    assert module.unmask_at is module.PURE_PYTHON_unmask_at


def test_client_selection_ignores_empty_no_speedups_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load_speedups()
    monkeypatch.setenv("RUE_TRIO_NO_SPEEDUPS", "")
    assert _fresh_mask_module().HAS_SPEEDUPS is True


def test_client_selection_falls_back_without_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUE_TRIO_NO_SPEEDUPS", raising=False)
    # A None entry in sys.modules makes the import raise ImportError, as if never built.
    monkeypatch.setitem(sys.modules, "rue_trio.protocol._speedups", None)
    module = _fresh_mask_module()
    assert module.HAS_SPEEDUPS is False
    assert module.apply_mask is module.PURE_PYTHON_apply_mask
    assert module.unmask_at is module.PURE_PYTHON_unmask_at
    assert (
        module.apply_mask(b"\x00\x00\x00\x00\x00", b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04\x01"
    )
