"""GEMMA-style TSV text of a table, its numbers formatted in compiled code.

Python's ``%`` formats about 4 million numbers a second: 300,000 variants x 11
numeric columns took 0.7 s of the main thread, holding the GIL.  Here one
compiled pass writes every row into a byte buffer: ``%.10g`` and ``%.3f``
from the float64 value scaled by an exact power of ten (one or a few
correctly rounded products), rounded to an integer of 10 (or 3 decimal)
digits, the exact rounding error of that product (Dekker's two-product)
deciding the halves, ties to even as C's printf.  Only a product that takes
several steps (exponents beyond +-22, e.g. p < 1e-13) and falls within its
error of a half, and a ``%.3f`` of 1e9 or more, are flagged; their rows are
formatted by Python's ``%`` instead.  So the text is the same bytes as
Python's formatting (tested on millions of values spanning every exponent).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["render"]

#: Column kinds: a float as ``%.10g`` (NaN -> empty), as ``%.3f`` (NaN -> ``nan``),
#: an integer as ``%d``, a string (UTF-8 bytes, already quoted).
G10, F3, INT, STR = 0, 1, 2, 3

_POW10 = np.array([10.0 ** k for k in range(23)])  # exact in float64


@numba.njit(nogil=True, cache=True)
def _scale(a, k):  # pragma: no cover (compiled)
    """``a * 10**k`` by exact powers of ten; returns (value, products taken)."""
    steps = 0
    while k > 22:
        a *= 1e22
        k -= 22
        steps += 1
    while k < -22:
        a /= 1e22
        k += 22
        steps += 1
    if k >= 0:
        a *= _POW10[k]
    else:
        a /= _POW10[-k]
    return a, steps + 1


@numba.njit(nogil=True, cache=True)
def _round_half(s, steps):  # pragma: no cover (compiled)
    """The integer nearest ``s`` and whether that is certain (``s`` carries a relative
    error of at most ``steps`` half-ulps: far enough from a half, rounding is exact)."""
    f = np.floor(s)
    frac = s - f
    ok = abs(frac - 0.5) > 4.0 * steps * 2.0 ** -53 * s + 1e-300
    return int(f) + (1 if frac > 0.5 else 0), ok


@numba.njit(nogil=True, cache=True)
def _two_prod(a, b):  # pragma: no cover (compiled)
    """``a * b = p + e`` exactly (Dekker's product, no FMA needed)."""
    p = a * b
    t = 134217729.0 * a  # 2^27 + 1: Veltkamp's split into 26-bit halves
    ah = t - (t - a)
    al = a - ah
    t = 134217729.0 * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@numba.njit(nogil=True, cache=True)
def _scaled_round(v, k):  # pragma: no cover (compiled)
    """``(s, m, certain)``: ``s ~ v * 10**k`` (v > 0) and ``m`` the integer nearest the
    exact product, ties to even as C's printf.  With ``|k| <= 22`` one correctly
    rounded product (or quotient) and its exact error decide every case; beyond,
    the product of several steps is rounded unless it is within its error of a half
    (``certain`` False)."""
    if k > 22 or k < -22:
        s, steps = _scale(v, k)
        m, ok = _round_half(s, steps)
        return s, m, ok
    if k >= 0:
        s, err = _two_prod(v, _POW10[k])
    else:
        d = _POW10[-k]
        s = v / d
        p, e = _two_prod(s, d)
        err = (v - p) - e  # v - s d exactly: the sign of the quotient's error
    f = np.floor(s)
    h = (s - f) - 0.5  # exact
    m = int(f)
    if h > 0 or (h == 0 and err > 0):
        m += 1
    elif h == 0 and err == 0 and m % 2 == 1:  # an exact tie: to even
        m += 1
    return s, m, True


@numba.njit(nogil=True, cache=True)
def _put_uint(out, pos, v):  # pragma: no cover (compiled)
    """Decimal digits of ``v >= 0`` at ``out[pos:]``; returns the new position."""
    if v == 0:
        out[pos] = 48
        return pos + 1
    n = 0
    t = v
    while t > 0:
        t //= 10
        n += 1
    for i in range(n - 1, -1, -1):
        out[pos + i] = 48 + v % 10
        v //= 10
    return pos + n


@numba.njit(nogil=True, cache=True)
def _put_text(out, pos, text):  # pragma: no cover (compiled)
    for i in range(len(text)):
        out[pos + i] = ord(text[i])
    return pos + len(text)


@numba.njit(nogil=True, cache=True)
def _put_g10(out, pos, v, digits):  # pragma: no cover (compiled)
    """``'%.10g' % v`` at ``out[pos:]`` (``digits``: 10 bytes of scratch); returns (new
    position, certain)."""
    if v != v:
        return _put_text(out, pos, "nan"), True
    if v < 0 or (v == 0 and np.signbit(v)):
        out[pos] = 45  # '-'
        pos += 1
        v = -v
    if v == np.inf:
        return _put_text(out, pos, "inf"), True
    if v == 0:
        out[pos] = 48
        return pos + 1, True
    e = int(np.floor(np.log10(v)))
    s, m, ok = _scaled_round(v, 9 - e)
    if s >= 1e10:
        e += 1
        s, m, ok = _scaled_round(v, 9 - e)
    elif s < 1e9:
        e -= 1
        s, m, ok = _scaled_round(v, 9 - e)
    if m >= 10 ** 10:  # 9.9999999995 -> 10
        m //= 10
        e += 1
    for i in range(9, -1, -1):
        digits[i] = 48 + m % 10
        m //= 10
    nd = 10
    while nd > 1 and digits[nd - 1] == 48:
        nd -= 1
    if -4 <= e < 10:  # fixed notation
        if e >= 0:
            for i in range(e + 1):
                out[pos] = digits[i] if i < nd else 48
                pos += 1
            if nd > e + 1:
                out[pos] = 46  # '.'
                pos += 1
                for i in range(e + 1, nd):
                    out[pos] = digits[i]
                    pos += 1
        else:
            out[pos] = 48
            out[pos + 1] = 46
            pos += 2
            for _ in range(-e - 1):
                out[pos] = 48
                pos += 1
            for i in range(nd):
                out[pos] = digits[i]
                pos += 1
    else:  # scientific: d.ddde+XX
        out[pos] = digits[0]
        pos += 1
        if nd > 1:
            out[pos] = 46
            pos += 1
            for i in range(1, nd):
                out[pos] = digits[i]
                pos += 1
        out[pos] = 101  # 'e'
        out[pos + 1] = 45 if e < 0 else 43
        pos += 2
        a = -e if e < 0 else e
        if a < 10:
            out[pos] = 48
            pos += 1
        pos = _put_uint(out, pos, a)
    return pos, ok


@numba.njit(nogil=True, cache=True)
def _put_f3(out, pos, v):  # pragma: no cover (compiled)
    """``'%.3f' % v`` at ``out[pos:]`` for ``|v| < 1e9``; returns (position, certain)."""
    if v != v:
        return _put_text(out, pos, "nan"), True
    if v < 0 or (v == 0 and np.signbit(v)):
        out[pos] = 45
        pos += 1
        v = -v
    if not v < 1e9:
        return pos, False
    _, m, ok = _scaled_round(v, 3)
    pos = _put_uint(out, pos, m // 1000)
    out[pos] = 46
    r = m % 1000
    out[pos + 1] = 48 + r // 100
    out[pos + 2] = 48 + r // 10 % 10
    out[pos + 3] = 48 + r % 10
    return pos + 4, ok


@numba.njit(nogil=True, cache=True)
def _render(r0, r1, kinds, index, floats, ints, text, starts, size):  # pragma: no cover
    """Rows r0:r1 as text: (bytes, each row's end, whether each row is certain)."""
    out = np.empty(size, dtype=np.uint8)
    ends = np.empty(r1 - r0, dtype=np.int64)
    certain = np.ones(r1 - r0, dtype=np.bool_)
    digits = np.empty(10, dtype=np.uint8)
    pos = 0
    for r in range(r0, r1):
        for c in range(kinds.size):
            if c:
                out[pos] = 9  # tab
                pos += 1
            k, j = kinds[c], index[c]
            if k == G10:
                v = floats[j, r]
                if v == v:
                    pos, ok = _put_g10(out, pos, v, digits)
                    certain[r - r0] &= ok
            elif k == F3:
                pos, ok = _put_f3(out, pos, floats[j, r])
                certain[r - r0] &= ok
            elif k == INT:
                v = ints[j, r]
                if v < 0:
                    out[pos] = 45
                    pos += 1
                    v = -v
                pos = _put_uint(out, pos, v)
            else:
                a, b = starts[j, r], starts[j, r + 1]
                out[pos:pos + b - a] = text[a:b]
                pos += b - a
        out[pos] = 10  # newline
        pos += 1
        ends[r - r0] = pos
    return out[:pos], ends, certain


def render(kinds: list[int], columns: list, n_rows: int, python_row) -> str:
    """The table's rows as TSV text (no header).

    Parameters
    ----------
    kinds : per column, :data:`G10`, :data:`F3`, :data:`INT` or :data:`STR`.
    columns : per column, a (rows,) float64, int64 or (for STR) a list of str or a
        numpy str array, already quoted as the TSV needs.
    python_row : ``python_row(r)`` -> row r's line (with its newline) by Python's
        ``%``: used for the rows with a cell whose rounding is not certain.
    """
    index, floats, ints, texts = [], [], [], []
    for k, col in zip(kinds, columns):
        group = floats if k in (G10, F3) else ints if k == INT else texts
        index.append(len(group))
        group.append(col)
    floats = np.array(floats, dtype=np.float64).reshape(len(floats), n_rows)
    ints = np.array(ints, dtype=np.int64).reshape(len(ints), n_rows)
    data, starts = [], np.zeros((len(texts), n_rows + 1), dtype=np.int64)
    offset = 0
    for j, col in enumerate(texts):
        raw, lengths = _utf8(col, n_rows)
        starts[j, 1:] = offset + np.cumsum(lengths)
        starts[j, 0] = offset
        offset += len(raw)
        data.append(raw)
    text = np.frombuffer(b"".join(data), dtype=np.uint8) if data else np.zeros(0, np.uint8)
    widest = sum(26 if k in (G10, F3) else 21 if k == INT else 0 for k in kinds)
    args = (np.array(kinds, dtype=np.int64), np.array(index, dtype=np.int64), floats, ints,
            text, starts)

    def rows(r0, r1):  # compiled without the GIL: slices of rows render in parallel
        a, b = starts[:, r0], starts[:, r1]
        size = (r1 - r0) * (widest + len(kinds)) + int((b - a).sum()) + 1
        return _render(r0, r1, *args, size)

    cuts = np.linspace(0, n_rows, _threads(n_rows) + 1).astype(int).tolist()
    if len(cuts) > 2:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(cuts) - 1) as pool:
            parts = list(pool.map(rows, cuts[:-1], cuts[1:]))
    else:
        parts = [rows(0, n_rows)]
    raw = b"".join(p[0].tobytes() for p in parts)
    certain = np.concatenate([p[2] for p in parts])
    if certain.all():
        return raw.decode()
    # a few rows again, by Python: split the text at those rows' ends
    offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    byte_ends = np.concatenate([p[1] + o for p, o in zip(parts, offsets)]).tolist()
    out, last = [], 0
    for r in np.flatnonzero(~certain).tolist():
        start = byte_ends[r - 1] if r else 0
        out.append(raw[last:start].decode())
        out.append(python_row(r))
        last = byte_ends[r]
    out.append(raw[last:].decode())
    return "".join(out)


def _codes(a: np.ndarray) -> np.ndarray:
    """The code points of a numpy str array, (rows, width) uint32 (0 past each end)."""
    width = a.dtype.itemsize // 4
    return a.view(np.uint32).reshape(a.shape[0], width) if width else np.zeros((a.shape[0], 0),
                                                                               np.uint32)


def needs_quotes(a: np.ndarray) -> bool:
    """Whether a numpy str column holds a tab, a quote or a line break (a field that
    CSV quotes)."""
    codes = _codes(a)
    return bool(np.isin(codes, (9, 10, 13, 34)).any())


def _utf8(col, n_rows: int) -> tuple[bytes, np.ndarray]:
    """A text column as its UTF-8 bytes, concatenated, and each value's byte length.

    A numpy str column of ASCII is converted by array views (no Python string per
    value); anything else (a list of str, non-ASCII) by Python's encoder."""
    if isinstance(col, np.ndarray):
        codes = _codes(col)
        if not (codes >= 128).any():
            lengths = np.char.str_len(col).astype(np.int64)
            keep = np.arange(codes.shape[1]) < lengths[:, None]
            return codes[keep].astype(np.uint8).tobytes(), lengths
        col = col.tolist()
    raw = "".join(col).encode()
    lengths = np.fromiter(map(len, col), dtype=np.int64, count=n_rows)
    if len(raw) != lengths.sum():  # non-ASCII: byte lengths
        lengths = np.fromiter((len(v.encode()) for v in col), dtype=np.int64, count=n_rows)
    return raw, lengths


def _threads(n_rows: int) -> int:
    """Slices of rows to render at once: one per core (Dask's count, which the CLI's
    local cluster also uses: cgroup limits included) for tables of 20,000 rows or
    more, else one."""
    if n_rows < 20_000:
        return 1
    from dask.system import CPU_COUNT

    return max(1, min(CPU_COUNT, 8))
