"""Which BLAS runs the host's matrix products: chosen by measurement on the products' own shapes and layouts, not
by name.

Why: no BLAS wins everywhere. On a 2-core AMD Zen 4 NumPy's OpenBLAS ran a training step's products faster than
oneMKL; on a 2-core Intel Xeon oneMKL ran them up to 1.5x faster. And one process must use one BLAS: each keeps
its threads spinning on the cores for a while after a product, so mixing the two by shape made a 784-512-512-10
step three times slower than either alone (docs/measurements/cpu-amd-epyc-2core-2026-12-01-notes.md). So the
first step's products run on NumPy's BLAS (or, in a later run, on the BLAS the saved timings of the shapes seen so
far favour); when a shape comes a second time (the second step), each candidate (NumPy's BLAS; oneMKL where
``gpunet[mkl]`` installed it) runs the first step's products (each (dtype, M, K, N, layout)) pass after pass in
the step's order, alone in a process of its own (``blas_timing``: another BLAS's spinning threads would slow it),
and the process uses the BLAS with the least total time; that choice is fixed.
The timings are kept per machine (CPU, instruction sets, library versions, threads) in ``~/.cache/gpunet/blas/``,
so a later run, or a resumed one, skips the measurement and makes the same choice; oneMKL runs in its
reproducible mode (``mkl.py``), so a run repeats bit for bit on one machine. ``gpunet info`` prints the timings.

``$GPUNET_BLAS``: ``auto`` (the default: measure), ``numpy`` (NumPy's BLAS; oneMKL is not even loaded: bit for bit
the same results on every machine with the same NumPy) or ``mkl`` (oneMKL for every product it takes).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from pathlib import Path

import numpy

from .. import native
from ..env import setting
from ..machine import cpu_flags, cpu_model
from . import blas_timing
from .blas_threads import BlasThreads, run_on
from .mkl import MklUnavailable, load as load_mkl

_log = logging.getLogger("gpunet")

CHOICES = ("auto", "numpy", "mkl")
CANDIDATES = ("numpy", "mkl")
SWITCH_MARGIN = 0.95  # oneMKL must beat NumPy's BLAS by 5%: noise must not flip the choice
TRIAL_SECONDS = 0.05  # about how long one key's measurement may take, over all candidates
# 2: each BLAS in processes of its own, the step's products in order (1, in this process, under-rated oneMKL up
# to 6x): timings saved by another method are not reused.
TIMING_METHOD = 2
MAX_FIRST_STEP_PRODUCTS = 64  # shapes before the choice is made even if none repeats
CHILD_SECONDS = 0.2  # the least time the timing processes take together, besides their start (0.2 s each)
BLOCK = 3  # timed calls in a row of one candidate
MIN_ROUNDS, MAX_ROUNDS = 1, 15


def wanted() -> str:
    value = os.environ.get("GPUNET_BLAS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"GPUNET_BLAS={value!r}: must be one of {', '.join(CHOICES)}")
    return value


class HostBlas:
    """``matmul(a, b, out)`` on this process's BLAS; one per process (the BLASes' threads are)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._numpy = BlasThreads()
        self._lock = threading.RLock()  # the choice, the measurements and the routes change under it
        self._setting = None  # the $GPUNET_BLAS the state below belongs to
        self._routes = {}     # (types, dtypes, shapes, strides) -> the BLAS chosen for them
        self._wanted = "auto"
        self._loaded = False
        self._mkl = None
        self._mkl_error = None
        self.timings: dict[str, dict] = {}  # key -> {candidate: median seconds}: saved, and measured here
        self.seen: dict[str, None] = {}     # the keys of this process's first step, in order
        self.frozen = False                 # a key came again: the first step is over, the choice is made
        self.current = "numpy"              # the BLAS of "auto"
        self.cache_file: Path | None = None

    # ---- the candidates -----------------------------------------------------------------------------------
    def mkl(self):
        """oneMKL, or None (why: ``mkl_error``). Loaded only when the setting may use it."""
        if self._mkl is None and self._mkl_error is None:
            try:
                self._mkl = load_mkl(self.threads)
                self._numpy.exclude(self._mkl.path)  # NumPy's thread policy is for NumPy's BLAS only
            except MklUnavailable as exc:
                self._mkl_error = str(exc)
        return self._mkl

    def _run(self, name: str, a, b, out):
        return run_on(name, self._numpy, self._mkl, a, b, out)

    # ---- the choice -------------------------------------------------------------------------------------------
    def _refresh(self) -> str:
        """The setting now, reloading the saved timings when ``$GPUNET_BLAS`` changed (tests change it; the
        cache folder is read then too). ``numpy`` neither loads oneMKL nor reads the cache."""
        environ = setting("GPUNET_BLAS")
        if environ != self._setting or not self._loaded:
            choice = wanted()
            with self._lock:
                self.cache_file = None
                if choice == "auto" and self.mkl() is not None:
                    try:
                        self.cache_file = native.cache_dir("blas") / f"timings-{self.fingerprint()}.json"
                    except OSError as exc:  # no cache folder: the timings hold for this process only
                        _warn_once(f"gpunet: no folder for the BLAS timings ({exc}); measuring in this process "
                                   "only")
                self.timings, self.seen, self.frozen, self.current = _read(self.cache_file), {}, False, "numpy"
                self._routes = {}
                self._setting, self._wanted, self._loaded = environ, choice, True
        return self._wanted

    def fingerprint(self) -> str:
        """What a measurement holds for: the CPU, its flags, the BLAS libraries and their threads."""
        from threadpoolctl import threadpool_info

        mkl = self.mkl()  # first: once loaded, threadpoolctl lists it too
        blas = sorted((i.get("internal_api"), i.get("version"), i.get("architecture"))
                      for i in threadpool_info() if i.get("user_api") == "blas")
        return native.digest_of(cpu_model(), sorted(cpu_flags()), numpy.__version__, blas,
                                mkl.version if mkl else None, self.threads, TIMING_METHOD)

    def measure_keys(self, keys) -> None:
        """Timings for the product keys that have none yet (saved and cached): each candidate in processes of its
        own, NumPy's BLAS, oneMKL, oneMKL, NumPy's BLAS (the machine drifts: each candidate's two runs are
        averaged). Where a timing process fails, one warning, and the products are timed here."""
        with self._lock:  # held while the timing processes run: a product of a new shape waits for the choice
            if self._refresh() != "auto" or self.mkl() is None:
                return
            missing = [k for k in dict.fromkeys(keys) if k not in self.timings]
            if missing:
                self._time(missing)

    def _time(self, missing: list) -> None:
        _log.info("gpunet: timing NumPy's BLAS and oneMKL on %d products, once for this machine", len(missing))
        seconds = max(CHILD_SECONDS, TRIAL_SECONDS * len(missing)) / 2
        runs = {name: [] for name in CANDIDATES}
        try:
            for name in (*CANDIDATES, *CANDIDATES[::-1]):
                runs[name].append(blas_timing.in_child(name, missing, self.threads, self._mkl.path, seconds / 2))
            measured = {k: {name: statistics.fmean(r[k] for r in runs[name]) for name in CANDIDATES}
                        for k in missing}
        except RuntimeError as exc:
            _warn_once(f"gpunet: {exc}; timing the BLASes in this process instead")
            rng = numpy.random.default_rng(0)
            measured = {k: self._measure(*blas_timing.operands(k, rng)) for k in missing}
        for key, medians in measured.items():
            self.timings[key] = medians
            _save(self.cache_file, key, medians)

    def choose(self, a, b) -> str:
        """The BLAS that runs ``a @ b``: "numpy" or "mkl"."""
        return self._choose(a, b)[0]

    def _choose(self, a, b) -> tuple[str, bool]:
        """(the BLAS for ``a @ b``, whether that is final for its route: not while the first step's shapes are
        being collected, whose second step must come through here to make the choice)."""
        setting = self._refresh()
        if setting == "numpy":
            return "numpy", True
        mkl = self.mkl()
        if setting == "mkl":
            if mkl is None:
                raise RuntimeError(f"GPUNET_BLAS=mkl: {self._mkl_error}")
            return ("mkl" if mkl.supports(a, b) else "numpy"), True
        if mkl is None or not mkl.supports(a, b):
            return "numpy", True
        with self._lock:
            key = product_key(a, b)
            if self.frozen:
                return self.current, True
            if key in self.seen:  # the second step: the first step's products are timed, the choice is made
                self.measure_keys(self.seen)
                self.frozen = True
            else:
                self.seen[key] = None
                if len(self.seen) >= MAX_FIRST_STEP_PRODUCTS:  # shapes that never repeat (inference, say)
                    self.measure_keys(self.seen)
                    self.frozen = True
            # Over the first step's shapes (those with timings while it runs: a rerun's, from the cache). Shapes
            # seen later (a last partial batch, an evaluation) do not change it, so a resumed run chooses as the
            # uninterrupted one did.
            self.current = best(self.timings[k] for k in self.seen if k in self.timings)
            return self.current, self.frozen

    def matmul(self, a, b, out=None):
        """``a @ b`` (into ``out``) on the BLAS chosen. The route of a (type, dtype, shape, strides) is kept after
        its first product: a small network's step runs a product every 50 microseconds."""
        if setting("GPUNET_BLAS") != self._setting:
            self._refresh()
        route = (type(a), type(b), a.dtype, b.dtype, a.shape, b.shape, a.strides, b.strides)
        name = self._routes.get(route)
        if name is None:
            with self._lock:  # a new shape may change the process's choice: every route is asked again
                name, final = self._choose(a, b)
                if self._routes.get("current") != self.current:
                    self._routes = {"current": self.current}
                if final:
                    self._routes[route] = name
        if name == "mkl" and out is not None and not self._mkl.writes(out, a, b):
            name = "numpy"  # an ``out`` cblas cannot write (another dtype NumPy casts to, a strided view)
        return self._run(name, a, b, out)

    def _measure(self, a, b) -> dict:
        """Each candidate's time for ``a @ b`` in this process (where the timing processes fail), in blocks: a block starts with an untimed call (the other BLAS's
        threads may still spin on the cores after its last product), then BLOCK timed calls, as a step that uses
        this BLAS throughout would run it; blocks alternate, the order reversed every round. Returns each
        candidate's median over its blocks' medians. A product slower than TRIAL_SECONDS is decided by one call
        of each."""
        scratch = numpy.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        once = {}
        for name in CANDIDATES:
            start = time.perf_counter()
            self._run(name, a, b, scratch)
            once[name] = time.perf_counter() - start
        total = sum(once.values())
        if total > TRIAL_SECONDS:
            return once
        rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, TRIAL_SECONDS / max(total * (BLOCK + 1), 1e-7))))
        blocks = {name: [] for name in CANDIDATES}
        for r in range(rounds):
            for name in (CANDIDATES if r % 2 == 0 else CANDIDATES[::-1]):
                self._run(name, a, b, scratch)
                times = []
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    self._run(name, a, b, scratch)
                    times.append(time.perf_counter() - start)
                blocks[name].append(statistics.median(times))
        return {name: statistics.median(t) for name, t in blocks.items()}

    def choice(self) -> tuple[str, str | None]:
        """(the setting, the BLAS products run on now: "numpy", "mkl", or None where GPUNET_BLAS=mkl cannot work),
        without loading oneMKL where the setting has not."""
        setting = self._refresh()
        if setting == "mkl":
            return setting, "mkl" if self.mkl() is not None else None
        return setting, self.current if setting == "auto" else setting

    def summary(self) -> dict:
        """The setting, the candidates, the timings and the choice so far, for ``gpunet info`` and the bench
        (this loads oneMKL, to say whether it is there)."""
        setting, current = self.choice()
        mkl = self.mkl()
        return {"setting": setting, "numpy_blas": numpy_blas(exclude=mkl.path if mkl else None),
                "mkl": mkl.version if mkl else None, "mkl_path": mkl.path if mkl else None,
                "mkl_error": self._mkl_error, "threads": self.threads,
                "cache_file": None if self.cache_file is None else str(self.cache_file), "current": current,
                "frozen": self.frozen, "seen": list(self.seen),
                "timings": {k: dict(v) for k, v in self.timings.items()}}


def best(timings) -> str:
    """The candidate with the least total over ``timings`` (dicts candidate -> seconds); NumPy's BLAS unless
    another beats it by more than the switch margin."""
    totals = {name: 0.0 for name in CANDIDATES}
    for entry in timings:
        for name in CANDIDATES:
            totals[name] += entry[name]
    return "mkl" if totals["mkl"] < SWITCH_MARGIN * totals["numpy"] else "numpy"


def product_key(a, b) -> str:
    """``dtype MxKxN layout``: "n" for an operand stored as given, "t" for a transposed view."""
    def layout(m):
        return "n" if m.flags.c_contiguous else "t"
    return f"{a.dtype.name} {a.shape[0]}x{a.shape[1]}x{b.shape[1]} {layout(a)}{layout(b)}"


def numpy_blas(exclude=None) -> str:
    """NumPy's BLAS as threadpoolctl sees it ("openblas 0.3.31 SkylakeX, 2 threads"), less the library at
    ``exclude`` (the oneMKL gpunet loaded itself)."""
    from threadpoolctl import threadpool_info

    found = [f"{i.get('internal_api')} {i.get('version')}" + (f" {i['architecture']}" if i.get("architecture") else "")
             + f", {i.get('num_threads')} threads" for i in threadpool_info()
             if i.get("user_api") == "blas" and not (exclude and os.path.realpath(i.get("filepath", "")) ==
                                                    os.path.realpath(exclude))]
    return "; ".join(found) or "unknown"


_warned: set = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _log.warning(message)


def _read(path: Path | None, say: bool = True) -> dict:
    """The saved timings: key -> {candidate: seconds}. An entry that is not a timing for each candidate (a
    wrong type, NaN, a negative or absurd number: ``blas_timing.timing_problem``) is dropped, with one log line
    for the file (unless not ``say``: a save reads the file again); so is a file that is not a JSON object."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if say:
            _log.warning("gpunet: ignoring the BLAS timings in %s: unreadable (%s)", path, str(exc)[:200])
        return {}
    if not isinstance(data, dict):
        if say:
            _log.warning("gpunet: ignoring the BLAS timings in %s: a JSON %s, not an object", path,
                         type(data).__name__)
        return {}
    kept, dropped = {}, {}
    for key, entry in data.items():
        problem = (f"{type(entry).__name__}, not an object" if not isinstance(entry, dict) else
                   next((f"{name}: {why}" for name in CANDIDATES
                         if (why := blas_timing.timing_problem(entry.get(name))) is not None), None))
        if problem is None:
            kept[key] = {name: float(entry[name]) for name in CANDIDATES}
        else:
            dropped[key] = problem
    if dropped and say:
        first = next(iter(dropped))
        _log.warning("gpunet: ignoring %d of the %d BLAS timings in %s (%r: %s)", len(dropped), len(data), path,
                     first[:80], dropped[first][:120])
    return kept


def _save(path: Path | None, key: str, medians: dict) -> None:
    """Merge one key's timings into the file (another process may have added others) by atomic rename, fsync'ed
    first."""
    if path is None:
        return
    try:
        data = _read(path, say=False)
        data[key] = medians
        native.write_atomically(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError as exc:  # a read-only cache: the timings still hold for this process
        _warn_once(f"gpunet: could not save the BLAS timings to {path} ({exc})")
