"""NaN, +inf and -inf at the columns where a row op's work is split, on every form, as docs/semantics.md says.

A row op reduces a row in parts: on a GPU (and the simulator) the lanes of a warp (column 31 is lane 31, 32 the
next warp's lane 0 or the lane's next value), the warps of a block, a thread's chunks (256 threads 8 or 4 deep:
1023/1024, 2047/2048), and the padding past the row's end; in the compiled CPU kernels 8- or 16-lane vectors, two
a step, a masked tail, and float sums of 2048 columns. A merge that drops a NaN shows only where the NaN sits at
such a split with padding or -inf on the other side: the CUDA block variants' online (max, sum) merge let a NaN
max lose to the padding's -inf and then dropped its sum, so a NaN at column 31 of 1025 gave a finite loss on sim
(and a GPU), and the fuzzer's random placements rarely hit it (it now aims at these columns too).

So each row op runs here once per launch variant edge width (the fuzzer's EDGE_WIDTHS, which
``test_the_edge_widths_hold_every_switch_of_the_plans`` holds to every width where gpunet/cuda/plans.py changes
kernel or warp group), on an array of one row per (column, kind): NaN, +inf or -inf at a split column among
finite values; NaN or +inf there among -inf and one finite value (which a lost NaN would leave finite, where a row
of -inf alone is NaN anyway); one finite value there among -inf; then a row of nothing but -inf and a finite row
(the backwards: y or dy holding the special). Every form (the NumPy form, the compiled kernels under each instruction
set, sim, cuda) must give the NaN/inf/0 pattern of the written semantics (the same formulas in float64, written
here), and every other form must agree value by value with the NumPy form (the fuzzer's comparison).

The simulator runs a thread per CUDA thread, about 40 ms of CPU a row of a block variant: there, rows over 1024
columns take the columns the issue named (SIM_COLUMNS and the last), and each op only its own variants' edges
(1025, one float32 chunk of 2048, and where its plan switches); the CPU forms take every width and every column.
``test_the_old_merge_fails_the_check`` keeps the bug as a planted mutation: these rows must catch it.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpunet import ops
from gpunet.cuda import sim_build
from gpunet.cuda.plans import MAX_WARP_COLS, row_plan
from gpunet.cuda.source import kernel_dir, read_source
from gpunet.devices.sim import SimLauncher, SimModule
from gpunet.ops.cross_entropy import SOFTMAX_CROSS_ENTROPY
from gpunet.ops.softmax import LOG_SOFTMAX, LOG_SOFTMAX_BACKWARD, SOFTMAX, SOFTMAX_BACKWARD
from tests.helpers import HAS_GPU, log_softmax_backward_scale, log_softmax_scale, softmax_backward_scale
from tests.ops.test_fuzz import (EDGE_WIDTHS, ISAS, NUMPY, Case, Form, Input, check_case, compiled_form,
                                 cross_entropy_loss_scale, finite, reference_softmax, run_form)
from tests.ops.test_parity import cross_entropy_grad_scale

NAN, INF = np.nan, np.inf
IGNORE = -100
# Split columns (each with the last column): lanes and vectors (15/16, 31/32, 63), a block of 256 threads, a
# float64 chunk (256 x 4), a float32 chunk and the CPU's float sum (2048); on the simulator, past the warp variant,
# the ones the issue named.
COLUMNS = (0, 15, 16, 31, 32, 63, 255, 256, 1023, 1024, 2047, 2048)
SIM_COLUMNS = (0, 31, 32, 63, 1023, 1024)


def columns(cols: int, chosen=COLUMNS) -> list:
    return sorted({c for c in chosen if c < cols} | {cols - 1})


# ---- the widths: the fuzzer's edges, which must hold every width where a launch plan changes -----------------------
# (name in OPS, the gpunet Op, whether it has a shared-memory variant: as gpunet/cuda/launcher.py asks the plan)
KERNEL_OPS = {"softmax": (SOFTMAX, True), "log_softmax": (LOG_SOFTMAX, True),
              "softmax_backward": (SOFTMAX_BACKWARD, True), "log_softmax_backward": (LOG_SOFTMAX_BACKWARD, True),
              "cross_entropy": (SOFTMAX_CROSS_ENTROPY, False)}
SCAN_LIMIT = 1 << 16


def _launch(op, smem: bool, cols: int, acc_bytes: int):
    # as gpunet/cuda/launcher.py asks: cross-entropy kinds have no shared-memory variant, nor cached arrays
    plan = row_plan.__wrapped__(op.name, 1, cols, acc_bytes, 4, getattr(op, "cached_arrays", 1), smem)
    return plan.kernel, plan.extra_args


def switch_widths(op, smem: bool, acc_bytes: int) -> set:
    """Each C where the op's launch (kernel, or warp group width) differs from C - 1's, and that C - 1."""
    widths, before = set(), _launch(op, smem, 1, acc_bytes)
    for cols in range(2, SCAN_LIMIT):
        now = _launch(op, smem, cols, acc_bytes)
        if now != before:
            widths |= {cols - 1, cols}
        before = now
    return widths


SWITCHES = {(name, acc): switch_widths(op, smem, acc) for name, (op, smem) in KERNEL_OPS.items() for acc in (4, 8)}
WIDTHS = sorted(EDGE_WIDTHS)


def test_the_edge_widths_hold_every_switch_of_the_plans():
    """The fuzzer's EDGE_WIDTHS name the variants' edges by hand: every width where a plan changes (float32 and
    float64 accumulation; float16 accumulates in float32) must be there, and the scan must see the last change."""
    every = set().union(*SWITCHES.values())
    assert every and max(every) < SCAN_LIMIT // 2
    assert every <= set(EDGE_WIDTHS), sorted(every - set(EDGE_WIDTHS))


def kernel_widths(op: str, dtype) -> list:
    """The widths a kernel form (sim, cuda) runs ``op`` at: every edge of the warp variant, and past it, the first
    block width, one float32 chunk (2048), and where the op's own plan switches in this dtype."""
    switches = SWITCHES[op if op in KERNEL_OPS else "cross_entropy", 8 if dtype == np.float64 else 4]
    return sorted({w for w in WIDTHS if w <= MAX_WARP_COLS} | {MAX_WARP_COLS + 1, 2048} | switches)


# ---- the rows -----------------------------------------------------------------------------------------------------
# (name, the row's other values, the value at the split column). The other values: "finite" (random), "-inf", or
# "-inf, one finite": -inf but at the partner column (half a row away), so that a NaN or +inf the reduction lost
# would leave a finite row (a row of -inf alone is NaN either way).
KINDS = [("NaN", "finite", NAN), ("+inf", "finite", INF), ("-inf", "finite", -INF),
         ("NaN among -inf", "-inf, one finite", NAN), ("+inf among -inf", "-inf, one finite", INF),
         ("one finite among -inf", "-inf", 0.5)]


def partner(column: int, cols: int) -> int:
    return (column + max(1, cols // 2)) % cols


def special_rows(cols: int, dtype, chosen=COLUMNS, min_rows: int = 0):
    """``(x, labels, names)``: a row per (split column, kind), a row of -inf and a finite row. A row the special
    makes NaN is labelled at its partner column (a NaN at the label makes the loss NaN whatever the reduction did);
    -inf is labelled (an infinite loss), and so is the one finite value among -inf (a loss of 0, a probability of
    1)."""
    rng = np.random.default_rng(cols)
    rows, labels, names = [], [], []
    for c in columns(cols, chosen):
        for name, others, special in KINDS:
            row = rng.standard_normal(cols) if others == "finite" else np.full(cols, -INF)
            if others == "-inf, one finite":
                row[partner(c, cols)] = rng.standard_normal()
            row[c] = special
            rows.append(row)
            labels.append(c if special in (-INF, 0.5) else partner(c, cols))
            names.append(f"{name} at {c}")
    rows += [np.full(cols, -INF), rng.standard_normal(cols)]
    labels += [0, cols - 1]
    names += ["all -inf", "finite"]
    return repeated(min_rows, np.array(rows).astype(dtype), np.array(labels, np.int64), names)


def repeated(min_rows: int, *arrays_and_names):
    """Arrays (and a list of row names) repeated down to at least ``min_rows`` rows."""
    times = max(1, -(-min_rows // len(arrays_and_names[-1])))
    return tuple(a * times if isinstance(a, list) else np.concatenate([a] * times) for a in arrays_and_names)


def backward_rows(cols: int, dtype, log: bool, chosen=COLUMNS, min_rows: int = 0):
    """``(y, dy, names)``: y a finite row's forward output (softmax, or log-softmax) and dy in [0.5, 1.5] (no sum
    near 0, whose sign rounding would decide), one of them holding a special at a split column: y NaN, +inf, or
    what a -inf logit gives (0, log: -inf); dy NaN, +inf or -inf. Then a NaN y row (a NaN logit's) and a plain row."""
    rng = np.random.default_rng(cols)
    y_rows, dy_rows, names = [], [], []
    for c in columns(cols, chosen):
        for where, special in [("y", NAN), ("y", INF), ("y", -INF if log else 0.0), ("dy", NAN), ("dy", INF),
                               ("dy", -INF)]:
            y, dy = forward64(rng.standard_normal(cols), log), rng.uniform(0.5, 1.5, cols)
            (y if where == "y" else dy)[c] = special
            y_rows.append(y)
            dy_rows.append(dy)
            names.append(f"{where} {special} at {c}")
    y_rows += [np.full(cols, NAN), forward64(rng.standard_normal(cols), log)]
    dy_rows += [rng.uniform(0.5, 1.5, cols), rng.uniform(0.5, 1.5, cols)]
    names += ["NaN y", "finite"]
    return repeated(min_rows, np.array(y_rows).astype(dtype), np.array(dy_rows).astype(dtype), names)


# ---- the written semantics, in float64 (docs/semantics.md) --------------------------------------------------------
def forward64(x, log: bool):
    """softmax or log-softmax as the semantics say: m = the row's max (NaN if any is), x - m, exp, sum; -inf
    gives 0 (log: -inf), and a row with NaN or +inf, or of nothing but -inf, is NaN."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        shifted = x - np.max(x, axis=-1, keepdims=True)
        s = np.exp(shifted).sum(axis=-1, keepdims=True)
        return shifted - np.log(s) if log else np.exp(shifted) / s


def nan_rows(x) -> np.ndarray:
    """The rows the semantics' table makes NaN: any NaN or +inf, or nothing but -inf."""
    return np.isnan(x).any(-1) | np.isposinf(x).any(-1) | np.isneginf(x).all(-1)


def cross_entropy64(x, labels, row_scale):
    """(per-row loss (m - x[label]) + log s, probabilities, gradient (p - onehot) * row_scale)."""
    x = np.asarray(x, np.float64)
    rows = np.arange(len(labels))
    p = forward64(x, False)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=-1)
        loss = (m - x[rows, labels]) + np.log(np.exp(x - m[:, None]).sum(axis=-1))
        grad = p.copy()
        grad[rows, labels] -= 1
        grad *= np.asarray(row_scale, np.float64).reshape(-1, 1)
    return loss, p, grad


def assert_follows(got, want, names, what: str):
    """``got`` has ``want``'s NaN and inf pattern, is finite where ``want`` is, and exactly 0 where ``want`` is
    (softmax's 0 at a -inf, and what is multiplied by it). On failure: the rows (``names``) that break it."""
    got = np.asarray(got, np.float64)
    with np.errstate(invalid="ignore"):
        bad = (np.isnan(got) != np.isnan(want)) | (np.isinf(want) & (got != want)) | \
              (np.isfinite(want) & ~np.isfinite(got)) | ((want == 0) & (got != 0))
    if bad.any():
        where = [tuple(int(i) for i in w) for w in np.argwhere(bad)[:4]]
        rows = [names[i] for i in np.flatnonzero(bad.any(-1))][:8] if bad.ndim == 2 else ["the reduced loss"]
        raise AssertionError(f"{what}: {int(bad.sum())} values break the semantics' NaN/inf/0 pattern, in rows "
                             f"{rows}; e.g. " + ", ".join(f"{w}: got {got[w]}, want {want[w]}" for w in where))


# ---- each op: its Case (inputs, and scales for the comparison with the NumPy form) and its semantics --------------
def softmax_case(op: str, cols: int, dtype, chosen, min_rows: int = 0):
    """``(Case, each output's float64 semantics, row names)`` of a softmax-family op on the rows above."""
    if op in ("softmax", "log_softmax"):
        log = op == "log_softmax"
        x, _, names = special_rows(cols, dtype, chosen, min_rows)
        want = forward64(x, log)
        assert np.array_equal(np.isnan(want).all(-1), nan_rows(x)), "the float64 form and the table disagree"
        scale = (lambda w: [log_softmax_scale(x)]) if log else (lambda w: [None])
        return Case(op, getattr(ops, op), (Input("x", x),), {}, scale), [want], names
    log = op == "log_softmax_backward"
    y, dy, names = backward_rows(cols, dtype, log, chosen, min_rows)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    with np.errstate(all="ignore"):   # the backwards propagate NaN and inf arithmetically
        if log:
            want = dy64 - np.exp(y64) * dy64.sum(axis=-1, keepdims=True)
            scale = lambda w: [log_softmax_backward_scale(y, dy)]  # noqa: E731
        else:
            want = y64 * (dy64 - (y64 * dy64).sum(axis=-1, keepdims=True))
            scale = lambda w: [softmax_backward_scale(y, dy)]  # noqa: E731
    return Case(op, getattr(ops, op), (Input("y", y), Input("dy", dy)), {}, scale), [want], names


def cross_entropy_case(op: str, cols: int, dtype, chosen, min_rows: int = 0):
    """"cross_entropy:none" (loss and probabilities), "with_grad:none" and "with_grad:mean" (loss and gradient)."""
    x, labels, names = special_rows(cols, dtype, chosen, min_rows)
    kind, reduction = op.split(":")
    row_scale = np.full(len(labels), 1.0 / len(labels) if reduction == "mean" else 1.0)
    loss, p, grad = cross_entropy64(x, labels, row_scale)
    assert np.array_equal(np.isnan(loss), nan_rows(x)), "the float64 form and the table disagree"
    with_grad = kind == "with_grad"

    def scales(want):
        with np.errstate(all="ignore"):
            loss_scale = cross_entropy_loss_scale(x, labels, reduction, IGNORE)
            return [loss_scale, cross_entropy_grad_scale(finite(reference_softmax(x)), labels, row_scale, IGNORE)
                    if with_grad else None]
    fn = ops.softmax_cross_entropy_with_grad if with_grad else ops.softmax_cross_entropy
    case = Case(op, fn, (Input("logits", x), Input("labels", labels)), {"reduction": reduction}, scales)
    return case, [np.array(loss.mean()) if reduction == "mean" else loss, grad if with_grad else p], names


OPS = {"softmax": softmax_case, "log_softmax": softmax_case, "softmax_backward": softmax_case,
       "log_softmax_backward": softmax_case, "cross_entropy:none": cross_entropy_case,
       "with_grad:none": cross_entropy_case, "with_grad:mean": cross_entropy_case}
DTYPES = [np.float32, np.float64, np.float16]
CPU_FORMS = [NUMPY, *(compiled_form(isa) for isa in ISAS)]
KERNEL_FORMS = [Form("sim", "sim")] + ([Form("cuda", "cuda")] if HAS_GPU else [])


def cases():
    """(op, cols, dtype, form): the CPU forms at every width; the kernel forms at each op's kernel widths, less
    "with_grad:none" (the kernel and launch of "with_grad:mean", with another scale); the block widths on the
    simulator marked slow."""
    out = []
    for op in OPS:
        for dtype in DTYPES:
            for form in CPU_FORMS + KERNEL_FORMS:
                kernel = form in KERNEL_FORMS
                if kernel and op == "with_grad:none":
                    continue
                for cols in kernel_widths(op, dtype) if kernel else WIDTHS:
                    marks = [pytest.mark.slow] if kernel and cols > MAX_WARP_COLS else []
                    out.append(pytest.param(op, cols, dtype, form, marks=marks,
                                            id=f"{op}-{cols}-{np.dtype(dtype).name}-{form.name}"))
    return out


def check_on(form, case, wants, names, what: str):
    """``case`` on ``form``: the semantics' pattern, and (but for the NumPy form) the NumPy form's values."""
    outs = run_form(form, case)
    assert not isinstance(outs, tuple), f"{form.name} raised: {outs}"
    for i, (got, want) in enumerate(zip(outs, wants)):
        assert_follows(got, want, names, f"{what} on {form.name}, output {i}")
    if form is not NUMPY:
        check_case(case, [form], skip_known=False)


@pytest.mark.parametrize("op,cols,dtype,form", cases())
def test_specials_at_split_columns_follow_the_semantics(op, cols, dtype, form):
    """Each row holds one special at one split column: every form gives the semantics' NaN, inf and 0 pattern (a
    NaN or +inf makes its whole row NaN, as a row of nothing but -inf does; -inf gives 0, or -inf in log-softmax,
    and an infinite loss at the label; the backwards carry them arithmetically) and, value by value, what the
    NumPy form gives."""
    kernel_block = form in KERNEL_FORMS and cols > MAX_WARP_COLS
    case, wants, names = OPS[op](op, cols, dtype, SIM_COLUMNS if kernel_block else COLUMNS)
    check_on(form, case, wants, names, op)


# The compiled kernels split a call's rows over threads past 2^17 elements a part, and write float32 outputs
# around the cache (their rows' unaligned heads and tails apart) where input and output hold 32 MiB (rows.cpp's
# STREAM_BYTES): 4300 rows of 1001 take both, in every row op.
SPLIT_AND_STREAMED = (4300, 1001)


@pytest.mark.parametrize("form", CPU_FORMS[1:], ids=lambda f: f.name)
@pytest.mark.parametrize("op", list(OPS))
def test_specials_survive_thread_splits_and_streamed_rows(op, form, monkeypatch):
    """The rows above, repeated down a float32 array large enough for the compiled kernels to split it over
    threads (4, on any machine) and to stream the output (log-softmax and the backwards): the same semantics, the
    same values."""
    monkeypatch.setenv("GPUNET_THREADS", "4")
    rows, cols = SPLIT_AND_STREAMED
    case, wants, names = OPS[op](op, cols, np.float32, COLUMNS, rows)
    check_on(form, case, wants, names, op)


# ---- a planted bug: the merge as it was before the fix --------------------------------------------------------------
MERGE = """    const acc_t top = MaxOp::apply(m, m2);
    const acc_t a = m == top ? s : s * gp_exp(m - top);
    const acc_t b = m2 == top ? s2 : s2 * gp_exp(m2 - top);"""
OLD_MERGE = """    const acc_t top = m > m2 ? m : m2;
    const acc_t a = m == neg_inf() ? acc_t(0) : s * gp_exp(m - top);
    const acc_t b = m2 == neg_inf() ? acc_t(0) : s2 * gp_exp(m2 - top);"""


@pytest.fixture
def old_merge(tmp_path):
    """A simulator launcher whose modules are built with kernels/'s headers as they are but for reduce.cuh's merge,
    as it was: a copy of the headers, in the include path in their place for that build only. The module's source
    gets the old merge as a comment, so that its build is cached apart from the real one's."""
    for header in kernel_dir().glob("*.cuh"):
        text = header.read_text()
        if header.name == "reduce.cuh":
            assert text.count(MERGE) == 1, "the mutation's anchor is not once in reduce.cuh"
            text = text.replace(MERGE, OLD_MERGE)
        (tmp_path / header.name).write_text(text)
    comment = "".join(f"// {line}\n" for line in ["reduce.cuh's online_merge as it was:", *OLD_MERGE.splitlines()])

    class OldMergeLauncher(SimLauncher):
        def load_module(self, module, config):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sim_build, "kernel_dir", lambda: tmp_path)
                return SimModule(f"{module}_old_merge", config, source=comment + read_source(module))
    return OldMergeLauncher()


@pytest.mark.slow
@pytest.mark.parametrize("op,dtype,cols", [(SOFTMAX_CROSS_ENTROPY, np.float32, 1025), (LOG_SOFTMAX, np.float64, 6145)],
                         ids=["cross_entropy", "log_softmax_plain"])
def test_the_old_merge_fails_the_check(op, dtype, cols, old_merge):
    """The online (max, sum) merge as it was (``m > m2 ? m : m2``, then a -inf max's sum dropped) compiled into
    the block variants: the check above must refuse it (the rows of a NaN at a lane's edge, and of a NaN among
    -inf), and pass the kernels as they are."""
    x, labels, names = special_rows(cols, dtype, SIM_COLUMNS)
    want = cross_entropy64(x, labels, np.ones(len(labels)))[0] if op is SOFTMAX_CROSS_ENTROPY else forward64(x, True)
    assert_follows(first_output(SimLauncher(), op, x, labels), want, names, "the kernels")
    with pytest.raises(AssertionError, match="NaN/inf/0 pattern"):
        assert_follows(first_output(old_merge, op, x, labels), want, names, "the old merge")


def first_output(launcher, op, x, labels):
    """The per-row loss of cross-entropy, or a softmax-family op's output, run through ``launcher``."""
    return op.run(launcher, x, labels, IGNORE)[0] if op is SOFTMAX_CROSS_ENTROPY else op.run(launcher, x)
