"""Section (d): the CPU goals of docs/performance.md, judged on this run's own rows of (a) and (b); for the full
shapes only (not --quick, not --nproc), after those sections."""

NAME = "goals"


def add_arguments(parser):
    pass


def wanted(args) -> bool:
    return not args.quick and "cpu" in args.devices.split(",")


def run(args, bench) -> bool:
    if "cpu" in bench.devices:
        print_goals(cpu_goals(bench.results), bench.results)
    return True


def cpu_goals(results):
    """The CPU goals (docs/performance.md) judged on this run's rows: (goal, what was measured, met) each, met None
    where the run has no figure for it. Where a small-batch network misses 1.3x and its products and update alone
    ('+update') make less than 1.3x PyTorch too, the row says so: no step that updates in a pass of its own could
    have met it in this run."""
    training = [r for r in results.get("training", []) if r["device"] == "cpu" and "gpunet_over_torch" in r]
    rows = [r for r in results.get("row_ops", []) if r["device"] == "cpu"]

    def name(r):
        return f"{r['network']} b{r['batch']}"
    goals = []
    if training:
        ratios = [(name(r), r["gpunet_over_torch"]) for r in training]
        goals.append((">= 1.0x PyTorch, every network", ", ".join(f"{n} {v:.2f}x" for n, v in ratios),
                      all(v >= 1.0 for _, v in ratios)))
        small = [r for r in training if r["batch"] < 1024]
        text = []
        for r in small:
            text.append(f"{name(r)} {r['gpunet_over_torch']:.2f}x")
            if r["gpunet_over_torch"] < 1.3 and r.get("update_bound_over_torch", 2.0) < 1.3:
                text[-1] += f" (its products and update alone: {r['update_bound_over_torch']:.2f}x)"
        goals.append((">= 1.3x PyTorch, small batches", ", ".join(text), all(r["gpunet_over_torch"] >= 1.3
                                                                          for r in small)))
        large = [r for r in training if r["batch"] >= 1024 and "gpunet_over_bound" in r]
        goals.append((">= 90% of the products bound, batch 1024",
                      ", ".join(f"{name(r)} {r['gpunet_over_bound']:.1%}" for r in large),
                      all(r["gpunet_over_bound"] >= 0.9 for r in large) if large else None))
        bounds = [r for r in training if "bound_over_torch" in r]
        goals.append(("products bound >= PyTorch's step", ", ".join(f"{name(r)} {r['bound_over_torch']:.2f}x"
                                                                     for r in bounds),
                      all(r["bound_over_torch"] >= 1.0 for r in bounds) if bounds else None))
    cells = [(f"{r['op']} C={r['shape'][1]}{mode}", r[key]) for r in rows if r["shape"][1] >= 100
             for key, mode in (("gpunet_over_torch", ""), ("gpunet_out_over_torch_out", " out="))
             if r.get(key) is not None]
    if cells:
        lowest = min(cells, key=lambda c: c[1])
        goals.append((">= 1.0x PyTorch, row ops at C >= 100", f"lowest: {lowest[0]} {lowest[1]:.2f}x",
                      lowest[1] >= 1.0))
    fractions = [(f"{r['op']} C={r['shape'][1]}", r["fraction_of_copy"]) for r in rows
                 if r["shape"][1] >= 1000 and r.get("fraction_of_copy") is not None]
    if fractions:
        lowest = min(fractions, key=lambda c: c[1])
        goals.append((">= 80% of the copy, row ops at C >= 1000 (out=)", f"lowest: {lowest[0]} {lowest[1]:.0%}",
                      lowest[1] >= 0.8))
    return goals


def print_goals(goals, results):
    if not goals:
        return
    print("\n(d) the CPU goals (docs/performance.md) in this run")
    for goal, measured, met in goals:
        print(f"{'met' if met else 'not met' if met is not None else '-':>8}  {goal}: {measured}")
    results["goals"] = [{"goal": g, "measured": m, "met": met} for g, m, met in goals]
