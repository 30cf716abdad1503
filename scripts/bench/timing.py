"""Timing and rounds, shared by every section: timers (the host's clock, CUDA events), rounds that alternate the
contenders' order, and medians over the rounds. A shared host drifts by 10-50% within seconds: a ratio is only
worth printing when both sides were measured in the same run, interleaved, and summarised by medians."""
import statistics
import time


def host_timer(fn, repeats):
    """Median seconds of ``repeats`` calls of ``fn`` after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def event_timer(new_event, elapsed_seconds, synchronize, inner=10):
    """GPU timing with CUDA events after a warm-up (CuPy's or PyTorch's events alike). Each sample spans
    ``inner`` calls queued back to back, so the host's launch time overlaps the GPU's work as in a real loop,
    instead of the GPU idling between a start event and a launch that the host has not yet made."""
    def timer(fn, repeats):
        fn()
        synchronize()
        start, stop = new_event(), new_event()
        times = []
        for _ in range(repeats):
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times.append(elapsed_seconds(start, stop) / inner)
        return statistics.median(times)
    return timer


def cuda_timer(cupy):
    return event_timer(cupy.cuda.Event, lambda a, b: cupy.cuda.get_elapsed_time(a, b) / 1e3,
                       lambda: cupy.cuda.Device().synchronize())


def torch_cuda_timer(torch):
    return event_timer(lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b) / 1e3,
                       torch.cuda.synchronize)


def device_timer(dev):
    """The timer for a gpunet device: CUDA events on a GPU, the host's clock elsewhere."""
    return cuda_timer(dev.xp) if dev.name.startswith("cuda") else host_timer


def alternating_rounds(rounds, contenders, measure):
    """``measure(contender)`` for every contender in each of ``rounds`` rounds, the order reversed every other
    round (A B, B A, ...) so that a machine drifting within a run favours neither side; returns contender -> its
    results, one per round, in round order."""
    runs = {c: [] for c in contenders}
    for r in range(rounds):
        for contender in (contenders if r % 2 == 0 else contenders[::-1]):
            runs[contender].append(measure(contender))
    return runs


def joined_rounds(per_part):
    """Rounds measured part by part (each part a list of per-round row lists, None for a failed worker) joined
    into one row list per round; a round with any failed part is None."""
    rounds = []
    for parts in zip(*per_part):
        rounds.append(None if any(p is None for p in parts) else [row for p in parts for row in p])
    return rounds


def median_rows(runs):
    """Row-op timings of several rounds: each (op, shape)'s median seconds and copy seconds; None if a round
    failed."""
    if not runs or any(r is None for r in runs):
        return None
    rows = []
    for i, first in enumerate(runs[0]):
        out_seconds = [r[i].get("out_seconds") for r in runs]
        rows.append(dict(first, seconds=statistics.median(r[i]["seconds"] for r in runs),
                         out_seconds=None if None in out_seconds else statistics.median(out_seconds),
                         copy_seconds=statistics.median(r[i]["copy_seconds"] for r in runs),
                         new_copy_seconds=statistics.median(r[i]["new_copy_seconds"] for r in runs)))
    return rows


def median_runs(runs, keys=("samples_s", "step_s", "products_s", "products_update_s")):
    """One row per network (or batch) from several rounds of a worker: the median of each of ``keys`` over the
    rounds that have it, every round's samples/s kept under ``samples_s_rounds``; None if any round failed."""
    if not runs or any(r is None for r in runs):
        return None
    rows = []
    for i, first in enumerate(runs[0]):
        row = dict(first)
        row["samples_s_rounds"] = [r[i]["samples_s"] for r in runs]
        for key in keys:
            values = [r[i][key] for r in runs if r[i].get(key) is not None]
            if values:
                row[key] = statistics.median(values)
        rows.append(row)
    return rows
