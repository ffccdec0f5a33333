"""A reader of dlib's serialization format, enough for its DNN files.

dlib writes a network outermost layer first, each layer wrapping its
subnetwork: a wrapper's version number, then its subnetwork, then its own
details. So the input layer's details come first in the file and the loss
layer's last, and nothing in the file says which wrapper is which: the
structure must be known (``dlib_resnet.py`` knows it) and the file is checked
against it as it is read. The encodings, from dlib's ``serialize.h`` and
``cuda/tensor.h`` (davisking/dlib):

- integers: one control byte (low 4 bits: the number of bytes that follow;
  bit 7: negative), then that many bytes, little endian;
- floats: a mantissa (int64) and an exponent (int16), value = m * 2**e;
- bools: the character '1' or '0'; strings: a length, then the bytes;
- tensors: version 2, four dimensions, then float32 little endian values;
  alias tensors (views into a layer's parameters): version 1, four dimensions.
"""

from __future__ import annotations

import numpy as np


class DlibFormatError(ValueError):
    """The file is not what the reader expects: damaged, truncated or another network."""


class DlibReader:
    """Reads dlib's encodings from a byte string, with the offset in every error."""

    def __init__(self, data: bytes, name: str = "file") -> None:
        self._data = memoryview(data)
        self._at = 0
        self.name = name

    @property
    def offset(self) -> int:
        return self._at

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {message} (at byte {self._at})")

    def _take(self, count: int) -> memoryview:
        if self._at + count > len(self._data):
            raise self.fail(f"ends early: {count} more bytes expected")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def integer(self) -> int:
        (control,) = self._take(1)
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"not an integer (control byte {control:#04x})")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def floating(self) -> float:
        if self._at < len(self._data) and self._data[self._at] & 0x70:
            raise self.fail("a float in dlib's old text encoding, which this reader does not read")
        mantissa, exponent = self.integer(), self.integer()
        return float(np.ldexp(float(mantissa), exponent))

    def boolean(self) -> bool:
        (char,) = self._take(1)
        if char not in b"01":
            raise self.fail(f"not a bool ({char:#04x})")
        return char == ord("1")

    def string(self, longest: int = 256) -> str:
        length = self.integer()
        if not 0 <= length <= longest:
            raise self.fail(f"a string of {length} bytes")
        try:
            return bytes(self._take(length)).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a string that is not ASCII") from None

    def version(self, expected: tuple[int, ...], what: str) -> int:
        found = self.integer()
        if found not in expected:
            raise self.fail(f"{what}: version {found}, expected {' or '.join(map(str, expected))}")
        return found

    def tag(self, expected: tuple[str, ...], what: str) -> str:
        """A layer's details start with a name and version, e.g. "con_4"."""
        found = self.string()
        if found not in expected:
            raise self.fail(f"{what}: found {found!r}, expected {' or '.join(expected)}")
        return found

    def _dimensions(self) -> tuple[int, int, int, int]:
        dims = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in dims) or np.prod(dims, dtype=np.float64) > 1 << 31:
            raise self.fail(f"implausible tensor dimensions {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        """A tensor's values as float32 with its (samples, k, rows, columns) shape."""
        self.version((2,), "tensor")
        dims = self._dimensions()
        count = int(np.prod(dims))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise self.fail(f"a tensor of shape {dims} holds NaN or infinite values")
        return values.reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias tensor: only the shape of a view into a layer's parameters."""
        self.version((1,), "alias tensor")
        return self._dimensions()

    def at_end(self) -> bool:
        return self._at == len(self._data)
