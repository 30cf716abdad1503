"""A differential fuzzer: every public op and its backward on every form of every device, on Hypothesis-drawn
inputs, against the NumPy form of the CPU device.

Forms. "numpy": the cpu device with ``GPUNET_CPU_KERNELS=0`` (the reference); "compiled": the cpu device's
compiled kernels, for an instruction set drawn from those this CPU runs (``GPUNET_CPU_ISA``); "sim": the CUDA
kernels on the simulator; "cuda": the CUDA kernels on a GPU, where one is present. Each drawn case runs on the
reference and on every other form of its group. If the reference raises, every form must raise the same exception
type with the same message; otherwise every form must give the same number of outputs, each of the same dtype and
shape, with the same NaN and inf pattern and every finite value within ``assert_per_value``'s per-value bound
(tests/helpers.py: ``rtol * scale`` and no absolute floor but the dtype's smallest normal number): "numpy_form"
tolerances for compiled against numpy, "cross_device" for sim and cuda. Where a value is a sum whose terms cancel,
its scale is the size of those terms (the helpers' ``*_scale`` functions; the others are derived below, each
documented). Every form must also leave its inputs as they were.

What is drawn. Dtypes float16, float32 and float64 (and, for the backwards and linear, a second operand of
another dtype; now and then an integer, bool, complex or long double input, which every form must refuse alike);
shapes of N = 1..64 rows and C = 1..3200 columns, with each launch variant's edges (EDGE_WIDTHS: 32/33, 1024/1025,
and the ends of shared memory up to 12289), 0-d, 1-D and 3-D inputs where the op takes them, any axis for the
softmax family; every input contiguous, transposed, strided (a slice of a larger array whose other elements are
NaN: a form that read outside the view would show it), reversed (negative strides) or byte-swapped; values
normal, tied, constant, tiny (subnormal) or huge (past float16's range: inf after the cast), sometimes with a whole
row or column of -inf (or NaN, +inf, 0), then NaN, +inf and -inf at random positions and at the columns where the
kernels split a row (SPLIT_COLUMNS: lane, warp, block and chunk edges, a block thread's last column, the last
column); backward inputs usually the forward's output, sometimes any values; labels of every integer kind
(int8..uint64, strided or not, and float and bool labels that must be refused) with ignored rows (none, some,
all), negative labels, labels at and past C, each kind's extremes and 2**64-1; ``ignore_index`` the default -100,
a class in [0, C), -1, C, the int64 extremes, and values that must be refused (2**63, -2**63-1, 2**70, True, 1.5);
every reduction and an unknown one;
``check_labels=False`` where every label is good; dloss scalars and per-row arrays with NaN and inf, and of the
wrong shape; the compiled kernels' instruction set (avx512, avx2, generic: whichever this CPU runs).

Budget. The properties are sized from the loaded Hypothesis profile (tests/conftest.py: "ci", the default,
derandomized; "deep", ten times the examples, drawn afresh each run: ``HYPOTHESIS_PROFILE=deep pytest
tests/ops/test_fuzz.py``). The simulator runs one OS thread per CUDA thread, so it cannot take 5,000 cases in a
CI run: each family has a "cpu" property (numpy against compiled, and against cuda where present) that takes the
profile's ``max_examples`` (1,000 under "ci": 5,000 cases over the five families) and a smaller "sim" property
(numpy against sim, a quarter of the examples: 1,250 more, at most SIM_ELEMENTS elements per input).
``test_the_fuzzer_ran_enough_cases`` counts the cases that were run and compared and asserts at least MIN_CASES
(5,000; 50,000 under "deep"). The whole file takes about 100 s on a 2-core machine under "ci".

Every disagreement the fuzzer found is a regression test at the end of this file. While its fix is pending, such a
test is xfail(strict) and an entry in KNOWN keeps the fuzzer from comparing the cases it covers on the form that
disagrees (every other form still is); the fix makes the test pass, strict fails it, and both marks go.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import warnings
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

import gpunet
from gpunet import cpu_kernels, ops
from tests.helpers import (HAS_GPU, assert_per_value, log_softmax_backward_scale, log_softmax_scale,
                           softmax_backward_scale)
from tests.ops.test_parity import cross_entropy_grad_scale

NAN, INF = np.nan, np.inf
DTYPES = [np.float16, np.float32, np.float64]
LABEL_KINDS = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Each row op's launch variants change at these widths (gpunet/cuda/plans.py: warp groups of 1..32 lanes and 1..32
# values per lane up to 1024; beyond, shared memory up to 48 KiB: cross-entropy has no such variant, float64's
# backward (two cached arrays of 8 bytes) leaves it at 3073, float64's forward and float32's backward at 6145,
# float32's forward at 12289; then the plain block variant), and the compiled kernels' vector tails at multiples of
# 8 and 16. Widths past MAX_COLS come from this list only.
EDGE_WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513,
               1000, 1023, 1024, 1025, 2048, 3000, 3072, 3073, 3200, 6144, 6145, 12288, 12289]
MAX_ROWS, MAX_COLS = 64, 3200
CPU_ELEMENTS = 40_000   # per input, on the cpu group
SIM_ELEMENTS = 12_289   # per input, on the sim group (its cost is threads, not arithmetic)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
CPU_EXAMPLES = settings.default.max_examples          # per family: the profile's
SIM_EXAMPLES = max(1, settings.default.max_examples // 4)
FAMILIES = ["softmax_family", "cross_entropy", "cross_entropy_backward", "activations", "linear"]
GROUPS = ["cpu", "sim"]
MIN_CASES = {"ci": 5_000, "deep": 50_000}.get(PROFILE, 0)

CASES: collections.Counter = collections.Counter()   # (family, group) -> cases run and compared
FINISHED: set = set()                                 # (family, group) whose property ran to the end


def fuzz_settings(group: str):
    """The loaded profile's settings, with this group's example count; the autouse fixtures of conftest.py are
    function-scoped, harmless here (every op is given its device)."""
    base = settings.default
    return settings(base, max_examples=CPU_EXAMPLES if group == "cpu" else SIM_EXAMPLES,
                    suppress_health_check=[*base.suppress_health_check, HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- the forms ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Form:
    name: str
    device: str
    env: tuple = ()      # (name, value or None to unset)
    purpose: str = "cross_device"


NUMPY = Form("numpy", "cpu", (("GPUNET_CPU_KERNELS", "0"), ("GPUNET_CPU_ISA", None)), "numpy_form")
_BUILT = cpu_kernels.library() is not None
if not _BUILT and os.environ.get("CI"):
    raise RuntimeError("the compiled CPU kernels failed to build: the fuzzer would compare the NumPy form with "
                       "itself")


def compiled_form(isa: str) -> Form:
    return Form(f"compiled[{isa}]", "cpu", (("GPUNET_CPU_KERNELS", None), ("GPUNET_CPU_ISA", isa)), "numpy_form")


def other_forms(group: str, isa: str) -> list:
    if group == "sim":
        return [Form("sim", "sim")]
    forms = [compiled_form(isa)] if _BUILT else []
    return forms + ([Form("cuda", "cuda")] if HAS_GPU else [])


# ---- inputs: a logical array and the layout it reaches the op in -------------------------------------------------
def _view(layout: str, ndim: int) -> Callable:
    if layout == "transposed":
        return lambda a: a.T
    if layout == "strided":
        return lambda a: a[tuple(slice(1, None, 2) if i == ndim - 1 else slice(None, None, 2) for i in range(ndim))]
    if layout == "reversed":
        return lambda a: a[(slice(None, None, -1),) * ndim]
    return lambda a: a


def _base(values: np.ndarray, layout: str) -> np.ndarray:
    """The array whose view (``_view``) is ``values``; a strided view's neighbours are NaN (or an integer kind's
    maximum), so a form that read outside the view would show it."""
    if layout == "transposed":
        return np.ascontiguousarray(values.T)
    if layout == "reversed":
        return np.ascontiguousarray(values[(slice(None, None, -1),) * values.ndim])
    if layout == "strided":
        shape = tuple(2 * s + (1 if i == values.ndim - 1 else 0) for i, s in enumerate(values.shape))
        fill = NAN if values.dtype.kind == "f" else np.iinfo(values.dtype).max if values.dtype.kind in "iu" else 1
        base = np.full(shape, fill, dtype=values.dtype)
        _view("strided", values.ndim)(base)[...] = values
        return base
    return values.copy()


@dataclasses.dataclass
class Input:
    """An op's array argument: ``values`` (the logical array), given to the op as ``layout`` of ``base``."""
    recipe: str
    values: np.ndarray = dataclasses.field(repr=False)
    layout: str = "contiguous"
    swapped: bool = False   # byte-swapped (">f4" on a little-endian machine)

    def __post_init__(self):
        if self.values.ndim == 0 or (self.layout == "transposed" and self.values.ndim == 1):
            self.layout = "contiguous" if self.values.ndim == 0 else "reversed"
        self.base = _base(self.values, self.layout)
        if self.swapped:
            self.base = self.base.astype(self.base.dtype.newbyteorder())
        self.view = _view(self.layout, self.values.ndim)
        assert np.array_equal(self.view(self.base), self.values, equal_nan=self.values.dtype.kind == "f")

    def on(self, dev):
        return self.view(dev.asarray(self.base))

    def _repr_pretty_(self, p, cycle):   # Hypothesis prints a falsifying example with this
        p.text(repr(self))

    def __repr__(self):
        order = " byte-swapped" if self.swapped else ""
        return f"{self.recipe} {self.values.dtype}{list(self.values.shape)} {self.layout}{order}"


@dataclasses.dataclass
class Case:
    """One drawn call: ``fn(*args, device=dev, **kwargs)``, where each Input arg is placed on the device and any
    other arg is passed as it is; ``scales(want)`` gives each output's per-value scale (None: the value itself)."""
    op: str
    fn: Callable = dataclasses.field(repr=False)
    args: tuple
    kwargs: dict
    scales: Callable = dataclasses.field(repr=False)

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@dataclasses.dataclass
class Free:
    """A per-value scale, and ``where`` the values nothing can be asserted of: their terms overflow the dtype and
    their sum cancels to a rounding residue, so the summation order decides between +inf, -inf and NaN (each
    case's scales say where)."""
    scale: np.ndarray
    where: np.ndarray


def run_form(form: Form, case: Case):
    """The outputs as host arrays, or ``("raised", type, message)``."""
    dev = gpunet.device(form.device)
    with pytest.MonkeyPatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, value in form.env:
            if value is None:
                m.delenv(name, raising=False)
            else:
                m.setenv(name, value)
        args = [a.on(dev) if isinstance(a, Input) else a for a in case.args]
        try:
            out = case.fn(*args, device=dev, **case.kwargs)
        except Exception as e:  # noqa: BLE001 - every form must raise the same
            return ("raised", type(e), str(e))
        outs = out if isinstance(out, tuple) else (out,)
        return [np.asarray(dev.to_numpy(o)) for o in outs]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_case(case: Case, forms: list, skip_known: bool = True) -> None:
    """``case`` on the reference and on each of ``forms``: the same exception, or the same outputs (above)."""
    if currently_in_test_context():   # (the regression tests below call this outside Hypothesis)
        note(f"case: {case}")
    bases = [a.base.copy() for a in case.args if isinstance(a, Input)]
    want = run_form(NUMPY, case)
    for form in forms:
        # (a known disagreement is in values, never in what raises: with the reference raising, all must)
        known = [k for k in KNOWN if k.applies(case, form)] if skip_known and not isinstance(want, tuple) else []
        if known:   # a reported disagreement, held by its xfail regression test: this form is not compared
            KNOWN_HITS[known[0].regression] += 1
            continue
        got = run_form(form, case)
        where = f"{case.op}: {form.name} against numpy"
        if isinstance(want, tuple) or isinstance(got, tuple):
            assert isinstance(want, tuple) and isinstance(got, tuple), \
                f"{where}: one raised, the other did not: numpy {_brief(want)}, {form.name} {_brief(got)}"
            assert issubclass(got[1], want[1]), f"{where}: numpy {_brief(want)}, {form.name} {_brief(got)}"
            if not (form.name == "cuda" and _host_only(case)):   # the GPU refuses those in dev.asarray, in its words
                assert got[2] == want[2], f"{where}: numpy {_brief(want)}, {form.name} {_brief(got)}"
            continue
        assert len(got) == len(want), where
        with np.errstate(all="ignore"):
            scales = case.scales(want)
        for i, (g, w, scale) in enumerate(zip(got, want, scales)):
            assert g.dtype == w.dtype and g.shape == w.shape, f"{where}, output {i}: {g.dtype}{g.shape} against " \
                                                               f"{w.dtype}{w.shape}"
            if isinstance(scale, Free):   # values that rounding decides outright: not compared
                g, w, scale = (np.where(scale.where, 0, a) for a in (g, w, scale.scale))
            try:
                assert_per_value(g, w, w.dtype, scale, purpose=form.purpose)
            except AssertionError as e:
                raise AssertionError(f"{where}, output {i}: {e}") from None
    for base, a in zip(bases, (a for a in case.args if isinstance(a, Input))):
        assert _same_bits(a.base, base), f"{case.op}: a form wrote into its input {a}"


def _host_only(case: Case) -> bool:
    return any(isinstance(a, Input) and a.values.dtype.char in "gG" for a in case.args)


def _brief(result):
    return f"raised {result[1].__name__}: {result[2]}" if isinstance(result, tuple) else "returned"


# ---- disagreements found and reported, not yet fixed -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Known:
    """A disagreement the fuzzer found: ``applies(case, form)`` picks the cases that would show it on that form,
    which are then not compared there (every other form still is). Each has an xfail(strict) regression test
    below; when the library is fixed that test passes, fails as strict, and its entry here goes too."""
    regression: str
    applies: Callable


KNOWN_HITS: collections.Counter = collections.Counter()


# Each entry: Known("the regression test's name", applies). None now: the four the fuzzer found (the regression
# tests at the end of this file) were fixed in 4fb1c61.
KNOWN: list = []


# ---- strategies --------------------------------------------------------------------------------------------------
def one_in(draw, n: int) -> bool:
    """True about once in ``n`` draws (Hypothesis favours an integer range's ends, so not its end), and False
    where it shrinks (to the range's start)."""
    return draw(st.integers(0, n - 1)) == n // 2


def widths(cap: int):
    return st.one_of(st.sampled_from([w for w in EDGE_WIDTHS if w <= cap]), st.integers(1, 40),
                     st.integers(1, min(MAX_COLS, cap)))


@st.composite
def shapes(draw, group: str, max_rows: int = MAX_ROWS):
    """(N, C): N from 1, C from 1, N * C within the group's budget."""
    cap = CPU_ELEMENTS if group == "cpu" else SIM_ELEMENTS
    cols = draw(widths(cap))
    rows = draw(st.integers(1, max(1, min(max_rows, cap // cols))))
    return rows, cols


PATTERNS = ["normal", "normal", "ties", "constant", "tiny", "huge"]
MAGNITUDES = [1e-3, 1.0, 4.0, 30.0, 300.0, 1e4]
SPECIALS = [NAN, INF, -INF]
# Where the kernels split a row: the CPU's 16- and 8-lane vectors (15/16, 31/32), a warp's lanes (31/32, 63), a
# block of 256 threads (255/256), a thread's float64 and float32 chunks and the CPU's float sums (1023/1024,
# 2047/2048); -1: the last column (the padding's neighbour); (r, 256): the last column of block thread r (its
# last chunk, whose neighbour is padding). A merge that loses a NaN shows there, rarely at a random position (a
# NaN at column 31 of 1025 gave a finite loss on sim: tests/ops/test_special_positions.py).
SPLIT_COLUMNS = [0, 15, 16, 31, 32, 63, 255, 256, 1023, 1024, 2047, 2048, -1, (0, 256), (31, 256), (32, 256),
                 (255, 256)]
layouts = st.sampled_from(["contiguous", "contiguous", "transposed", "strided", "reversed"])


@st.composite
def values(draw, shape, dtype, rows_axis=None, pattern=None):
    """A float array of ``shape`` in ``dtype`` from a seeded generator (its recipe drawn), sometimes with a whole
    row (along ``rows_axis``, else the last axis) or column (an index of the first axis) of one value, then NaN and
    +-inf injected at drawn positions: anywhere, or at a split column (SPLIT_COLUMNS, past the row's end: its last)
    of a drawn row, so also into a row of -inf. Returns ``(array, recipe)``."""
    seed = draw(st.integers(0, 2**32 - 1))
    pattern = pattern or draw(st.sampled_from(PATTERNS))
    magnitude = draw(st.sampled_from(MAGNITUDES))
    rng = np.random.default_rng(seed)
    if pattern == "ties":
        x = rng.integers(-2, 3, shape) * magnitude
    elif pattern == "constant":
        x = np.full(shape, magnitude * draw(st.sampled_from([1.0, -1.0, 0.0])))
    elif pattern == "tiny":   # about the dtype's smallest normal number: subnormal inputs and outputs
        x = rng.standard_normal(shape) * float(np.finfo(dtype).tiny) * draw(st.sampled_from([1e-3, 1.0, 4.0]))
    elif pattern == "huge":   # past float16's range (inf after the cast), far past float32's exp range
        x = rng.standard_normal(shape) * draw(st.sampled_from([7e4, 1e30, 1e200]))
    else:
        x = rng.standard_normal(shape) * magnitude
    x = np.asarray(x, dtype=np.float64)
    fills = []
    if x.ndim >= 1 and one_in(draw, 4):
        kind = draw(st.sampled_from(["row", "row", "column"]))
        fill = draw(st.sampled_from([-INF, -INF, NAN, INF, 0.0]))
        index = draw(st.integers(0, 2**31))
        if kind == "row":   # a row: a line along rows_axis (the op's axis), else the last
            lead = np.moveaxis(x, -1 if rows_axis is None else rows_axis, -1)   # a view: writes reach x
            where = np.unravel_index(index % (lead.size // lead.shape[-1]), lead.shape[:-1])
            lead[where] = fill
            fills.append(f"row {tuple(int(i) for i in where)} = {fill}")
        else:               # a column: an index of the first axis
            x[index % x.shape[0]] = fill
            fills.append(f"x[{index % x.shape[0]}] = {fill}")
    anywhere_or_split = st.one_of(st.integers(0, 2**31),
                                  st.tuples(st.integers(0, 2**31), st.sampled_from(SPLIT_COLUMNS)))
    drawn = draw(st.lists(st.tuples(anywhere_or_split, st.sampled_from(SPECIALS)), max_size=4))
    points = [(_flat_position(shape, rows_axis, position), special) for position, special in drawn]
    flat = x.reshape(-1)
    for position, special in points:
        flat[position] = special
    with np.errstate(over="ignore"):
        out = x.astype(dtype)
    recipe = f"{pattern}(seed={seed}, x{magnitude:g}) {fills} specials={points}".strip()
    return out, recipe


def _flat_position(shape, rows_axis, position) -> int:
    """The flat index of a drawn position: an int anywhere, or ``(line, split column)``: that column of a line
    along ``rows_axis`` (else the last axis), the last where the line is shorter."""
    size = int(np.prod(shape))
    if isinstance(position, int) or len(shape) == 0:
        return (position if isinstance(position, int) else position[0]) % size
    line, split = position
    lines = np.moveaxis(np.arange(size).reshape(shape), -1 if rows_axis is None else rows_axis, -1)
    n = lines.shape[-1]
    if isinstance(split, tuple):   # (r, period): the last column c with c % period == r
        r, period = split
        column = r + (n - 1 - r) // period * period
    else:
        column = split
    return int(lines.reshape(-1, n)[line % (size // n), column if 0 <= column < n else n - 1])


REFUSED_DTYPES = [np.int32, np.bool_, np.complex64, np.longdouble]


@st.composite
def arrays_of(draw, shape, dtype, pattern=None, name="x", refusable=False, rows_axis=None):
    """An Input of drawn values, layout and byte order; with ``refusable``, now and then of a dtype every op
    refuses (integer, bool, complex, long double: ValueError)."""
    x, recipe = draw(values(shape, dtype, rows_axis=rows_axis, pattern=pattern))
    if refusable and one_in(draw, 40):
        refused = draw(st.sampled_from(REFUSED_DTYPES))
        with np.errstate(all="ignore"):
            x = np.nan_to_num(x.astype(np.float64)).astype(refused)
    swapped = x.dtype.itemsize > 1 and one_in(draw, 10)
    return Input(f"{name}={recipe}", x, draw(layouts), swapped)


def finite(a):
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def reference_softmax(x, axis=-1):
    """float64 softmax of ``x`` (NaN where the row has none), for inputs and scales."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / e.sum(axis=axis, keepdims=True)


def along(scale_fn, axis):
    """A row helper's scale (rows along the last axis) for arrays whose rows lie along ``axis``."""
    def run(*arrays):
        moved = [np.moveaxis(np.asarray(a), axis, -1) for a in arrays]
        return np.moveaxis(scale_fn(*moved), -1, axis)
    return run


def log_softmax_backward_free(logy, dy):
    """dy - exp(logy) sum(dy) where exp(logy) overflows the dtype the forms compute in (logy > 88.7 in float32, so
    no log-probability) and sum(dy) cancels to within its rounding (|sum| <= n eps sum|dy|): inf times a rounding
    residue, +inf, -inf or NaN by the order of the sum (sim and numpy differed so, an honest difference)."""
    wide = np.result_type(logy.dtype, dy.dtype, np.float32)
    logy, dy = np.asarray(logy, np.float64), finite(dy)
    n = dy.shape[-1]
    with np.errstate(all="ignore"):
        residue = np.abs(dy.sum(axis=-1, keepdims=True)) <= 2 * n * np.finfo(wide).eps * np.abs(dy).sum(
            axis=-1, keepdims=True)
        return (logy > np.log(np.finfo(wide).max)) & residue


# ---- family 1: softmax, log_softmax, their backwards, softmax_jacobian ---------------------------------------------
@st.composite
def softmax_cases(draw, group: str):
    dtype = draw(st.sampled_from(DTYPES))
    rows, cols = draw(shapes(group))
    op = draw(st.sampled_from(["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
                               "softmax_jacobian"]))
    if op == "softmax_jacobian":   # (C, C) per row: small rows only
        cols, rows = min(cols, 64), min(rows, 8)
        shape = draw(st.sampled_from([(cols,), (rows, cols)]))
        y = draw(arrays_of(shape, dtype, name="y"))
        if draw(st.booleans()):   # half the time a distribution
            y = Input(y.recipe + " softmaxed", reference_softmax(y.values).astype(dtype), y.layout, y.swapped)

        def jacobian_scale(want):
            v = finite(y.values)
            return [np.abs(v[..., :, None] * v[..., None, :]) + np.abs(v)[..., None, :] * np.eye(v.shape[-1])]
        return Case(op, ops.softmax_jacobian, (y,), {}, jacobian_scale)

    # The row axis, and the shape: 1-D (C,), 2-D (N, C) or (C, N), 3-D (a, C, b) with a * b = N.
    ndim = draw(st.sampled_from([1, 2, 2, 2, 3]))
    if ndim == 1:
        shape, axis = (cols,), draw(st.sampled_from([0, -1]))
    elif ndim == 2:
        axis = draw(st.sampled_from([-1, 1, 0, -2]))
        shape = (rows, cols) if axis % 2 == 1 else (cols, rows)
    else:
        a = draw(st.integers(1, rows))
        b = max(1, rows // a)
        axis = draw(st.sampled_from([1, -2]))
        shape = (a, cols, b)
    axis_kw = {} if axis == -1 and draw(st.booleans()) else {"axis": axis}
    if one_in(draw, 40):   # an axis the array has not: refused
        axis_kw = {"axis": draw(st.sampled_from([ndim, -ndim - 1]))}
        axis = -1
    fn = getattr(ops, op)
    if op in ("softmax", "log_softmax"):
        x = draw(arrays_of(shape, dtype, refusable=True, rows_axis=axis))
        scale = along(log_softmax_scale, axis) if op == "log_softmax" else None
        return Case(op, fn, (x,), axis_kw, lambda want: [None if scale is None else scale(x.values)])

    # A backward: y (softmax's output, log-softmax's log, or any values) and dy, maybe of another dtype.
    y_dtype, dy_dtype = dtype, draw(st.sampled_from([dtype, dtype, dtype, *DTYPES]))
    y = draw(arrays_of(shape, y_dtype, name="y", rows_axis=axis))
    if not one_in(draw, 4):   # usually the forward's output (of values with their specials)
        with np.errstate(all="ignore"):
            p = reference_softmax(y.values, axis)
            y = Input(y.recipe + (" softmaxed" if op == "softmax_backward" else " log-softmaxed"),
                      (p if op == "softmax_backward" else np.log(p)).astype(y_dtype), y.layout, y.swapped)
    dy = draw(arrays_of(shape, dy_dtype, name="dy", rows_axis=axis))
    if op == "softmax_backward":
        scale_fn = along(softmax_backward_scale, axis)
        return Case(op, fn, (y, dy), axis_kw, lambda want: [scale_fn(y.values, dy.values)])
    scale_fn, free_fn = along(log_softmax_backward_scale, axis), along(log_softmax_backward_free, axis)
    return Case(op, fn, (y, dy), axis_kw,
                lambda want: [Free(scale_fn(y.values, dy.values), free_fn(y.values, dy.values))])


# ---- labels and ignore_index -------------------------------------------------------------------------------------
IGNORE_KINDS = ["default", "default", "-100", "class", "class", "-1", "C", "int64_max", "int64_min", "np.int64"]
REFUSED_IGNORE = ["2**63", "-2**63-1", "2**70", "True", "1.5"]
BAD_LABELS = ["negative", "-1", "C", "past_C", "kind_max", "kind_min", "uint64_max", "int64_min"]


def _ignore_index(kind: str, cols: int, draw):
    return {"-100": -100, "class": draw(st.integers(0, cols - 1)), "-1": -1, "C": cols, "int64_max": INT64_MAX,
            "int64_min": INT64_MIN, "np.int64": np.int64(draw(st.integers(0, cols - 1))), "2**63": 2**63,
            "-2**63-1": -(2**63) - 1, "2**70": 2**70, "True": True, "1.5": 1.5}[kind]


def _fits(value, kind) -> bool:
    info = np.iinfo(kind)
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and info.min <= int(value) <= info.max


@st.composite
def labels_for(draw, rows: int, cols: int):
    """``(labels Input, kwargs with ignore_index, the ignore_index in force)``: labels of a drawn kind, valid
    classes where they fit the kind, some or all rows ignored (where ignore_index fits the kind), and now and then
    a bad label (negative, at or past C, a kind's extreme, 2**64-1) or a refused kind (float, bool)."""
    kind = draw(st.sampled_from([np.float32, np.bool_])) if one_in(draw, 30) else draw(st.sampled_from(LABEL_KINDS))
    ignore_kind = draw(st.sampled_from(REFUSED_IGNORE if one_in(draw, 30) else IGNORE_KINDS))
    kwargs = {} if ignore_kind == "default" else {"ignore_index": _ignore_index(ignore_kind, cols, draw)}
    ignore_index = kwargs.get("ignore_index", -100)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    top = cols if kind in (np.float32, np.bool_) else min(cols, int(np.iinfo(kind).max) + 1)
    labels = [int(v) for v in rng.integers(0, top, rows)]
    ignored = draw(st.sampled_from(["none", "none", "some", "all"]))
    if ignored != "none" and kind not in (np.float32, np.bool_) and _fits(ignore_index, kind):
        for r in range(rows):
            if ignored == "all" or rng.random() < 0.3:
                labels[r] = int(ignore_index)
    bad = draw(st.lists(st.tuples(st.integers(0, 2**31), st.sampled_from(BAD_LABELS)), max_size=2)) \
        if one_in(draw, 6) else []
    if kind not in (np.float32, np.bool_):
        info = np.iinfo(kind)
        for row, what in bad:
            value = {"negative": -draw(st.integers(2, 2**40)), "-1": -1, "C": cols, "past_C": cols + draw(
                st.integers(1, 2**40)), "kind_max": int(info.max), "kind_min": int(info.min),
                "uint64_max": 2**64 - 1, "int64_min": INT64_MIN}[what]
            labels[row % rows] = min(max(value, int(info.min)), int(info.max))
    array = np.array(labels, dtype=np.int64 if kind in (np.float32, np.bool_) else object).astype(kind)
    layout = draw(st.sampled_from(["contiguous", "contiguous", "strided", "reversed"]))
    recipe = f"labels=(seed={seed}, ignored={ignored}, bad={bad})"
    return Input(recipe, array, layout), kwargs, ignore_index


def cross_entropy_loss_scale(x, labels, reduction, ignore_index):
    """A row's loss is -log_softmax(x)[label]: log_softmax_scale's terms there, |x_t - m| + log s + 1, then summed
    (and divided by the rows that count) as the reduction does. The 1 is test_parity.py's
    cross_entropy_loss_scale's missing term: s's relative rounding error is an absolute error of log s, which is
    what is left of the loss where the label's probability nears 1 (a float64 loss of 4.6e-7 differed by 2e-10
    of itself between numpy and sim, an honest rounding)."""
    rows = np.where(labels != ignore_index, log_softmax_scale(x)[np.arange(len(labels)),
                                                                 np.where(labels != ignore_index, labels, 0)], 0.0)
    if reduction == "none":
        return rows
    return rows.sum() / (max((labels != ignore_index).sum(), 1) if reduction == "mean" else 1)


def _valid_labels(labels: Input, ignore_index):
    """The labels as int64 and the mask of rows that count (only asked where the op succeeded: every label is
    a class or ignore_index)."""
    lab = labels.values.astype(np.int64)
    return lab, lab != int(ignore_index)


# ---- family 2: softmax_cross_entropy, softmax_cross_entropy_with_grad ----------------------------------------------
@st.composite
def cross_entropy_cases(draw, group: str):
    dtype = draw(st.sampled_from(DTYPES))
    rows, cols = draw(shapes(group))
    logits = draw(arrays_of((rows, cols), dtype, name="logits", refusable=True))
    labels, kwargs, ignore_index = draw(labels_for(rows, cols))
    reduction = "avg" if one_in(draw, 40) else draw(st.sampled_from(["mean", "mean", "sum", "none", "default"]))
    if reduction != "default":
        kwargs["reduction"] = reduction
    reduction = "mean" if reduction == "default" else reduction
    with_grad = draw(st.booleans())
    if with_grad and one_in(draw, 5):
        kwargs["check_labels"] = False   # the kernels' flag is not read back: only where every label is good
        lab = labels.values
        if lab.dtype.kind not in "iu" or not _fits(ignore_index, np.int64) or np.any(
                (lab.astype(object) != int(ignore_index)) & ((lab.astype(object) < 0) | (lab.astype(object) >= cols))):
            del kwargs["check_labels"]
    op = "softmax_cross_entropy_with_grad" if with_grad else "softmax_cross_entropy"

    def scales(want):
        lab, valid = _valid_labels(labels, ignore_index)
        x = logits.values
        with np.errstate(all="ignore"):
            loss = cross_entropy_loss_scale(x, lab, reduction, int(ignore_index))
            if not with_grad:
                return [loss, None]
            n_valid = valid.sum()
            row_scale = np.where(valid, 1.0 / n_valid if reduction == "mean" and n_valid else 1.0, 0.0)
            return [loss, cross_entropy_grad_scale(finite(reference_softmax(x)), lab, row_scale, int(ignore_index))]
    return Case(op, getattr(ops, op), (logits, labels), kwargs, scales)


# ---- family 3: softmax_cross_entropy_backward, scale_grad -------------------------------------------------------
def _scale_grad(grad, dloss, reduction="mean", device=None):
    """scale_grad takes no device (its grad's device does): the same signature as the other ops."""
    return ops.scale_grad(grad, dloss, reduction)


@st.composite
def dlosses(draw, rows: int, reduction: str, dtype):
    """A scalar (a float, sometimes NaN, inf, 0 or negative), or for "none" one value per row; now and then a
    wrong shape (refused)."""
    what = "wrong" if one_in(draw, 30) else draw(st.sampled_from(
        ["scalar", "scalar", "special", "rows" if reduction == "none" else "scalar"]))
    if what == "scalar":
        return draw(st.sampled_from([1.0, 1, 0.5, 2.5, -3.0, 0.0, 1e-3]))
    if what == "special":
        return draw(st.sampled_from([NAN, INF, -INF]))
    if what == "wrong":
        return np.ones(rows + 1, dtype) if draw(st.booleans()) else np.ones((rows, 1), dtype)
    d, _ = draw(values((rows,), draw(st.sampled_from([dtype, np.float64])), pattern="normal"))
    return Input("dloss", d, draw(st.sampled_from(["contiguous", "strided", "reversed"])))


def _dloss_values(dloss):
    return dloss.values if isinstance(dloss, Input) else np.asarray(dloss)


@st.composite
def cross_entropy_backward_cases(draw, group: str):
    dtype = draw(st.sampled_from(DTYPES))
    rows, cols = draw(shapes(group))
    reduction = draw(st.sampled_from(["mean", "sum", "none", "none"]))
    if one_in(draw, 4):   # scale_grad: grad * dloss
        grad = draw(arrays_of((rows, cols), dtype, name="grad"))
        dloss = draw(dlosses(rows, reduction, dtype))

        def scale_grad_scale(want):   # a product: relative to itself
            return [None]
        return Case("scale_grad", _scale_grad, (grad, dloss, reduction), {}, scale_grad_scale)
    probs = draw(arrays_of((rows, cols), dtype, name="probs"))
    if not one_in(draw, 4):   # usually a distribution (of the drawn values, specials and all)
        probs = Input(probs.recipe + " softmaxed", reference_softmax(probs.values).astype(dtype), probs.layout,
                      probs.swapped)
    labels, kwargs, ignore_index = draw(labels_for(rows, cols))
    dloss = draw(dlosses(rows, reduction, dtype))
    kwargs["reduction"] = reduction

    def scales(want):
        """(p - onehot) * row_scale, row_scale = dloss / n_valid (mean) or dloss: both terms, per value; a
        non-finite row scale gives no finite value, so it counts 0."""
        lab, valid = _valid_labels(labels, ignore_index)
        d = _dloss_values(dloss).astype(np.float64)
        with np.errstate(all="ignore"):
            row_scale = np.where(valid, d / max(valid.sum(), 1) if reduction == "mean" else d, 0.0)
        return [cross_entropy_grad_scale(finite(probs.values), lab, finite(row_scale), int(ignore_index))]
    return Case("softmax_cross_entropy_backward", ops.softmax_cross_entropy_backward, (probs, labels, dloss), kwargs,
                scales)


# ---- family 4: relu, tanh, sigmoid, gelu and their backwards -----------------------------------------------------
BETA, KAPPA = np.sqrt(2 / np.pi), 0.044715


def gelu_condition(x):
    """1 + 2|u| (1 - s), s = 1 / (1 + exp(-2u)): how s = x's GELU factor amplifies the rounding of its argument
    u (tests/ops/test_gelu.py's tolerance_per_value); 1 where exp(2u) overflows (1 - s is 0 there)."""
    x = finite(x)
    with np.errstate(all="ignore"):
        u = BETA * (x + KAPPA * x**3)
        one_minus_s = 1 / (1 + np.exp(2 * u))
        cond = 1 + 2 * np.abs(u) * one_minus_s
    return np.where(np.isfinite(cond), cond, 1.0)


def gelu_slope_terms(x):
    """|s| + |x/2 sech(u)^2 u'(x)|: the two terms the slope sums (they cancel near x = -0.75); the second is 0
    where sech^2 underflows (NaN from inf * 0 there counts 0)."""
    x = finite(x)
    with np.errstate(all="ignore"):
        u = BETA * (x + KAPPA * x**3)
        s = 1 / (1 + np.exp(-2 * u))
        second = 0.5 * x / np.cosh(u) ** 2 * BETA * (1 + 3 * KAPPA * x * x)
    return np.abs(s) + np.nan_to_num(np.abs(second), nan=0.0, posinf=0.0)


@st.composite
def activation_cases(draw, group: str):
    dtype = draw(st.sampled_from(DTYPES))
    rows, cols = draw(shapes(group))
    shape = draw(st.sampled_from([(rows, cols), (rows * cols,), (rows, cols, 1), ()]))
    name = draw(st.sampled_from(["relu", "tanh", "sigmoid", "gelu"]))
    backward = draw(st.booleans())
    x = draw(arrays_of(shape, dtype, refusable=True))
    if not backward:
        def forward_scale(want):
            """relu selects: exact (scale 0); tanh, sigmoid: relative to the value; gelu: the value times the
            condition of its factor s."""
            return [{"relu": 0.0, "tanh": None, "sigmoid": None,
                     "gelu": np.abs(finite(want[0])) * gelu_condition(x.values)}[name]]
        return Case(name, getattr(ops, name), (x,), {}, forward_scale)
    dy = draw(arrays_of(shape, draw(st.sampled_from([dtype, dtype, dtype, *DTYPES])), name="dy"))
    if name != "gelu" and x.values.dtype.kind == "f" and not one_in(draw, 4):   # usually the forward's output
        with np.errstate(all="ignore"):
            y64 = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
                   "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name](x.values.astype(np.float64))
            y = y64.astype(dtype)
        x = Input(x.recipe + f" {name}ed", y, x.layout, x.swapped)

    def backward_scale(want):
        """The terms of each slope times |dy|: relu selects (exact); tanh dy (1 - y^2): |dy| (1 + y^2); sigmoid
        dy y (1 - y): |dy| |y| (1 + |y|); gelu: |dy| times its slope's terms and condition."""
        y, g = finite(x.values), np.abs(finite(dy.values))
        with np.errstate(all="ignore"):
            terms = {"relu": 0.0 * g, "tanh": g * (1 + y * y), "sigmoid": g * np.abs(y) * (1 + np.abs(y)),
                     "gelu": g * gelu_slope_terms(y) * gelu_condition(y)}[name]
        return [np.where(np.isfinite(terms), terms, np.inf)]
    return Case(f"{name}_backward", getattr(ops, f"{name}_backward"), (x, dy), {}, backward_scale)


# ---- family 5: linear, linear_backward ---------------------------------------------------------------------------
@st.composite
def linear_cases(draw, group: str):
    dtype = draw(st.sampled_from(DTYPES))
    rows, out_features = draw(shapes(group))
    in_features = draw(st.one_of(st.integers(1, 16), st.sampled_from([31, 32, 33, 64, 100])))
    w_dtype = draw(st.sampled_from([dtype, dtype, dtype, *DTYPES]))
    if np.float16 in (dtype, w_dtype):   # NumPy multiplies float16 matrices without a BLAS: keep them small
        in_features = max(1, min(in_features, 200_000 // (rows * out_features)))
    x = draw(arrays_of((rows, in_features), dtype))
    w = draw(arrays_of((in_features, out_features), w_dtype, name="w"))
    bad = one_in(draw, 30)   # now and then a shape that must be refused
    if bad:
        w = draw(arrays_of((in_features + 1, out_features), w_dtype, name="w"))
    ax, aw = np.abs(finite(x.values)), np.abs(finite(w.values))
    if draw(st.booleans()):
        bias = draw(st.one_of(st.none(), st.just("input")))
        b = None if bias is None else draw(arrays_of((out_features,), draw(st.sampled_from(DTYPES)), name="b"))

        def linear_scale(want):
            """x W + b: the sum of the terms' sizes, |x| |W| + |b|."""
            with np.errstate(all="ignore"):
                return [ax @ aw + (0 if b is None else np.abs(finite(b.values)))]
        return Case("linear", ops.linear, (x, w, b), {}, linear_scale)
    dy = draw(arrays_of((rows, out_features), dtype, name="dy"))
    gy = np.abs(finite(dy.values))

    def linear_backward_scale(want):
        """dy W^T, x^T dy, sum of dy: each sum's terms' sizes."""
        with np.errstate(all="ignore"):
            return [gy @ aw.T, ax.T @ gy, gy.sum(axis=0)]
    return Case("linear_backward", ops.linear_backward, (x, w, dy), {}, linear_backward_scale)


STRATEGIES = {"softmax_family": softmax_cases, "cross_entropy": cross_entropy_cases,
              "cross_entropy_backward": cross_entropy_backward_cases, "activations": activation_cases,
              "linear": linear_cases}
ISAS = cpu_kernels.supported_isas()


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("family", FAMILIES)
def test_fuzz(family, group):
    """One property per op family and group: every drawn case agrees on every form (the module docstring)."""
    @fuzz_settings(group)
    @given(case=STRATEGIES[family](group), isa=st.sampled_from(ISAS))
    def check(case, isa):
        check_case(case, other_forms(group, isa))
        CASES[family, group] += 1

    check()
    FINISHED.add((family, group))


def _planted(bug):
    """softmax, with ``bug`` applied to its output (or input) on sim only."""
    def fn(x, device):
        if device.name != "sim":
            return ops.softmax(x, device=device)
        if bug == "raises":
            raise TypeError("planted")
        y = ops.softmax(x, device=device)
        if bug == "writes":   # after the op: the output is right, the input is not what it was
            x[..., 0] = 7.0
            return y
        return {"off": lambda: y * np.float32(1 + 1e-4), "nan_to_zero": lambda: np.nan_to_num(y, nan=0.0),
                "flush": lambda: np.where(y < 1e-6, 0, y).astype(y.dtype)}[bug]()
    return fn


@pytest.mark.parametrize("bug,message", [("off", "differ more than cross_device"), ("nan_to_zero", "NaN pattern"),
                                         ("flush", "differ more than cross_device"), ("raises", "one raised"),
                                         ("writes", "wrote into its input")])
def test_the_fuzzer_catches_a_planted_disagreement(bug, message):
    """The comparison is not vacuous: a value off by 1e-4 of itself (float32), a NaN turned to 0, small outputs
    flushed to 0, an exception the reference does not raise, an input written to: each fails the case."""
    x = np.array([[0.0, 1.0, -20.0, NAN], [0.0, 1.0, -20.0, 3.0]], np.float32)
    case = Case("planted", _planted(bug), (Input("x", x),), {}, lambda want: [None])
    with pytest.raises(AssertionError, match=message):
        check_case(case, [Form("sim", "sim")])


def test_the_fuzzer_ran_enough_cases():
    """At least MIN_CASES cases ran and were compared (5,000 under "ci", 50,000 under "deep"). Only meaningful
    after every property of this file ran (it runs last)."""
    everything = {(f, g) for f in FAMILIES for g in GROUPS}
    if FINISHED != everything:
        pytest.skip(f"only {sorted(FINISHED)} of the properties ran: run the whole file to count")
    total = sum(CASES.values())
    assert total >= MIN_CASES, f"{total} cases ({dict(CASES)}), fewer than {MIN_CASES} under profile {PROFILE!r}"


# ---- regressions: each disagreement the fuzzer found, minimized (fixed in 4fb1c61) -------------------------------
def assert_forms_agree(fn, args, forms, **kwargs):
    """``fn(*args, **kwargs)`` on ``forms`` against the numpy form, as the fuzzer compares them (KNOWN
    disagreements included); the numpy form's outputs."""
    scale_none = lambda want: [None] * len(want)  # noqa: E731 - each value relative to itself
    case = Case(getattr(fn, "__name__", "op"), fn, tuple(Input("arg", a) if isinstance(a, np.ndarray) else a
                                                          for a in args), kwargs, scale_none)
    check_case(case, forms, skip_known=False)
    return run_form(NUMPY, case)


KERNEL_FORMS = [Form("sim", "sim")] + ([Form("cuda", "cuda")] if HAS_GPU else [])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("what", ["softmax", "cross_entropy_gradient", "log_softmax_backward"])
def test_compiled_exp_keeps_subnormals(what, isa):
    """compiled[avx2]'s exp returned 0 below -87.0 (-86.6 in log_softmax's backward), where the true exp is a
    subnormal or, down to -87.34, a normal float32: softmax flushed the normal 1.35e-38 to 0, and log_softmax_backward
    with an infinite sum(dy) gave 0 * inf = NaN where numpy, the other instruction sets, sim and PyTorch give inf."""
    form = compiled_form(isa)
    if what == "log_softmax_backward":
        logy = np.array([[-95.0, 0.0]], np.float32)   # exp(-95) = 5.5e-42, a float32 subnormal
        dy = np.array([[1.0, -np.inf]], np.float32)    # sum(dy) = -inf
        want = assert_forms_agree(ops.log_softmax_backward, (logy, dy), [form])
        np.testing.assert_array_equal(want[0], [[np.inf, np.nan]])
        return
    x = np.array([[-87.2, 0.0]], np.float32)           # exp(-87.2) = 1.35e-38, a normal float32
    if what == "softmax":
        assert_forms_agree(ops.softmax, (x,), [form])
    else:
        assert_forms_agree(ops.softmax_cross_entropy_with_grad, (x, np.array([1])), [form], reduction="sum")


@pytest.mark.parametrize("fn,y,dy,want", [(ops.tanh_backward, 300.0, 0.001, -90.0),
                                          (ops.tanh_backward, 300.0, 0.0, 0.0),
                                          (ops.sigmoid_backward, 1.5, 60000.0, -45000.0)],
                         ids=["tanh-overflow", "tanh-zero-dy", "sigmoid-overflow"])
def test_float16_tanh_and_sigmoid_backward_compute_in_float32(fn, y, dy, want):
    """The NumPy forms (cpu, compiled or not: no compiled kernel) computed float16 in float16, so y * y (tanh) or
    dy * y (sigmoid) overflowed: -inf where the kernels, computing in float32 and rounding once as
    docs/semantics.md says (and PyTorch's opmath), give -90 and -45000; 0 * inf = NaN where they give 0."""
    out = assert_forms_agree(fn, (np.array([y], np.float16), np.array([dy], np.float16)), KERNEL_FORMS)
    np.testing.assert_allclose(out[0].astype(np.float64), [want], rtol=2e-3)


def test_cross_entropy_backward_with_infinite_dloss_agrees():
    """An infinite dloss: the NumPy form computed p * s - s at the label, inf - inf = NaN, the kernels (p - 1) * s
    = -inf. Every form now subtracts first (docs/semantics.md; PyTorch's two-step chain gives NaN there)."""
    probs = np.array([[0.5, 0.5, 0.0]], np.float32)
    out = assert_forms_agree(ops.softmax_cross_entropy_backward, (probs, np.array([0]), np.inf), KERNEL_FORMS,
                             reduction="sum")
    np.testing.assert_array_equal(out[0], [[-np.inf, np.inf, np.nan]])


@pytest.mark.parametrize("fn,dtype,cols", [(ops.softmax_cross_entropy, np.float32, 1025),
                                           (ops.softmax_cross_entropy_with_grad, np.float16, 1025),
                                           (ops.softmax, np.float64, 6145), (ops.log_softmax, np.float64, 6145)],
                         ids=["cross_entropy", "cross_entropy_with_grad", "softmax", "log_softmax"])
def test_block_kernels_keep_a_nan_logit(fn, dtype, cols):
    """The CUDA block variants' online (max, sum) pass dropped a NaN logit in some columns, with the finite entries
    of its chunk (MaxOp's a > b ? a : b lost a NaN followed by the -inf padding): a row of 1025 zeros and one NaN had
    the loss log(1020) on sim, NaN on cpu (and in PyTorch); softmax of 6145 float64 columns one NaN, not a NaN row."""
    x = np.zeros((1, cols), dtype)
    x[0, -1] = np.nan
    args = (x, np.array([0])) if "cross_entropy" in fn.__name__ else (x,)
    out = assert_forms_agree(fn, args, KERNEL_FORMS)
    assert np.isnan(out[0]).all()
