"""Tests for the hand-written safetensors reader and writer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from qaudio_local.convert.safetensors_io import (
    SafetensorsFile,
    bf16_to_float32,
    float32_to_bf16,
    write_safetensors,
)
from qaudio_local.errors import CheckpointNotFoundError, ConversionError


def _raw_file(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def test_round_trip_f32_f16_and_listing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors: dict[str, np.ndarray] = {
        "b.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "a.bias": rng.standard_normal(7).astype(np.float16),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "strided": rng.standard_normal((4, 6)).astype(np.float32)[:, ::2],
    }
    path = write_safetensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    with SafetensorsFile(path) as f:
        assert f.keys() == sorted(tensors)
        assert len(f) == 5 and "scalar" in f and "nope" not in f
        assert f.metadata == {"format": "pt"}
        assert f.dtype("b.weight") == "F32" and f.dtype("a.bias") == "F16"
        assert (
            f.shape("b.weight") == (3, 5) and f.shape("scalar") == () and f.shape("empty") == (0, 4)
        )
        for name, value in tensors.items():
            got = f.read(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
            got[...] = 0  # reads are private, writable copies
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # data starts 8-byte aligned


def test_bf16_round_trip_and_rounding(tmp_path: Path) -> None:
    exact = np.array([1.0, -2.5, 0.0, 2.0**127, -(2.0**-100), np.inf, -np.inf], dtype=np.float32)
    noisy = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    path = write_safetensors(tmp_path / "b.safetensors", {"e": exact, "n": noisy}, bf16=True)
    with SafetensorsFile(path) as f:
        assert f.dtype("e") == "BF16" and f.shape("n") == (16, 8)
        got_e, got_n = f.read("e"), f.read("n")
    assert got_e.dtype == np.float32 and got_n.dtype == np.float32
    np.testing.assert_array_equal(got_e, exact)
    np.testing.assert_allclose(got_n, noisy, rtol=2.0**-8, atol=0)
    assert path.stat().st_size < 16 * 8 * 4  # stored in two bytes per value


def test_bf16_ties_to_even_and_nan() -> None:
    # 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    # 1 + 3*2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
    values = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-20, np.nan], np.float32)
    widened = bf16_to_float32(float32_to_bf16(values))
    np.testing.assert_array_equal(widened[:3], [1.0, 1 + 2.0**-6, 1 + 2.0**-7])
    assert np.isnan(widened[3])


def test_write_is_deterministic_and_rejects_other_dtypes(tmp_path: Path) -> None:
    tensors = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    a = write_safetensors(tmp_path / "a.safetensors", tensors)
    b = write_safetensors(tmp_path / "b.safetensors", dict(tensors))
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ConversionError, match="float32 or float16"):
        write_safetensors(tmp_path / "c.safetensors", {"i": np.arange(3)})
    with pytest.raises(ConversionError, match="strings"):
        write_safetensors(tmp_path / "d.safetensors", tensors, {"n": 1})  # type: ignore[dict-item]


def test_missing_file_and_unknown_tensor(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError):
        SafetensorsFile(tmp_path / "absent.safetensors")
    path = write_safetensors(tmp_path / "t.safetensors", {"x": np.ones(2, np.float32)})
    f = SafetensorsFile(path)
    for call in (f.read, f.shape, f.dtype):
        with pytest.raises(ConversionError, match="not in"):
            call("y")


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "data", "length", "what"),
    [
        (b"", b"", None, "too short"),
        (b"{}", b"", 1 << 40, "header length"),
        (b"{not json", b"", None, "not valid JSON"),
        (b"\xff\xfe{}", b"", None, "not valid JSON"),
        ([1, 2], b"", None, "not a JSON object"),
        ({"x": {"dtype": "F32"}}, b"", None, "lacks"),
        ({"x": {**GOOD_ENTRY, "dtype": "Q4"}}, bytes(8), None, "unknown dtype"),
        ({"x": {**GOOD_ENTRY, "data_offsets": [0, 16]}}, bytes(8), None, "outside"),
        ({"x": {**GOOD_ENTRY, "data_offsets": [8, 0]}}, bytes(8), None, "outside"),
        ({"x": {**GOOD_ENTRY, "shape": [3]}}, bytes(8), None, "needs 12 bytes"),
        ({"x": {**GOOD_ENTRY, "shape": [-2]}}, bytes(8), None, "bad shape"),
        ({"__metadata__": {"a": 1}, "x": GOOD_ENTRY}, bytes(8), None, "map of strings"),
    ],
)
def test_malformed_files_raise_conversion_error(
    tmp_path: Path, header: object, data: bytes, length: int | None, what: str
) -> None:
    if header == b"":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"\x01\x02")
    else:
        path = _raw_file(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(ConversionError, match=what) as info:
        SafetensorsFile(path)
    assert info.value.path == str(path)
    assert "re-download" in str(info.value) and isinstance(info.value, ValueError)


def test_unreadable_dtype_lists_but_does_not_read(tmp_path: Path) -> None:
    header = {"x": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}
    f = SafetensorsFile(_raw_file(tmp_path / "f8.safetensors", header, bytes(4)))
    assert f.dtype("x") == "F8_E4M3" and f.shape("x") == (4,)
    with pytest.raises(ConversionError, match="F8_E4M3"):
        f.read("x")


def test_reads_integer_tensors(tmp_path: Path) -> None:
    header = {"i": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}
    data = np.array([7, -3], dtype="<i8").tobytes()
    f = SafetensorsFile(_raw_file(tmp_path / "i.safetensors", header, data))
    np.testing.assert_array_equal(f.read("i"), [7, -3])


@pytest.mark.parity
def test_matches_the_reference_safetensors_package(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(3)
    tensors: dict[str, np.ndarray] = {
        "w": rng.standard_normal((4, 3)).astype(np.float32),
        "h": rng.standard_normal(5).astype(np.float16),
    }
    ours = write_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "pt"})
    loaded = st_numpy.load_file(str(ours))
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)
    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(tensors, str(theirs), metadata={"format": "np"})
    with SafetensorsFile(theirs) as f:
        assert f.metadata == {"format": "np"}
        for name, value in tensors.items():
            np.testing.assert_array_equal(f.read(name), value)


@pytest.mark.parity
def test_bf16_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    values = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "t.safetensors"
    st_torch.save_file({"x": values.to(torch.bfloat16)}, str(path))
    with SafetensorsFile(path) as f:
        assert f.dtype("x") == "BF16"
        np.testing.assert_array_equal(f.read("x"), values.to(torch.bfloat16).float().numpy())
    ours = write_safetensors(tmp_path / "o.safetensors", {"x": values.numpy()}, bf16=True)
    back = st_torch.load_file(str(ours))["x"]
    assert back.dtype == torch.bfloat16
    assert torch.equal(back, values.to(torch.bfloat16))  # same rounding as torch
