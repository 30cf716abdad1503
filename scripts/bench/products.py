"""The training table's bounds: what a step's matrix products alone (and then the optimizer's update) take on the
device's BLAS, timed without the rest of the step, and the samples/s that bounds."""
from gpunet import nn, optim
from gpunet.info import step_products


def matrix_products(dev, sizes, batch, dtype="float32"):
    """The matrix products of one training step of an MLP of ``sizes`` (``gpunet.info.step_products``: per
    layer ``y = x W``, ``dW = x^T dy`` and ``dx = dy W^T`` for every layer but the first) through the device's
    own matrix product (on the CPU, the BLAS gpunet chose), into preallocated outputs. What no implementation of
    that step can skip: its time bounds the samples/s of any framework whose BLAS runs at this one's rate."""
    pairs = [(dev.asarray(a), dev.asarray(b)) for a, b in step_products(sizes, batch, dtype)]
    outs = [dev.xp.empty((a.shape[0], b.shape[1]), dtype=a.dtype) for a, b in pairs]

    def products():
        for (a, b), out in zip(pairs, outs):
            dev.matmul(a, b, out=out)
    return products


def products_and_update(dev, sizes, batch):
    """``matrix_products`` followed by the optimizer's update over the network's parameters (SGD momentum 0.9,
    as the trainers), as in a step: the update re-reads every weight, gradient and velocity after the products
    have pushed them out of the cache. A tighter bound for a design that updates in a pass of its own (gpunet's,
    and PyTorch's with the same traffic); only folding the update into the products would beat it."""
    products = matrix_products(dev, sizes, batch)
    params = nn.mlp(sizes, "relu", seed=0, device=dev).parameters()
    for p in params:
        p.grad[...] = 1e-3
    opt = optim.SGD(params, lr=1e-6, momentum=0.9)

    def step():
        products()
        opt.step()
    return step


def products_bound_columns(ours_row, theirs_row, row):
    """The matrix-product bound of a training row (see ``matrix_products``) and the two ratios to it, then the
    bound with the update (``products_and_update``) and the same two ratios, added to the JSON ``row``; dashes
    where a figure is missing."""
    line = ""
    for key, name in (("products_s", "bound"), ("products_update_s", "update_bound")):
        if not ours_row.get(key):
            line += f" {'-':>9} {'-':>12} {'-':>11}"
            continue
        bound = ours_row["batch"] / ours_row[key]
        row.update({f"products_{name}_samples_s" if name == "bound" else f"{name}_samples_s": bound,
                    f"gpunet_over_{name}": ours_row["samples_s"] / bound})
        line += f" {bound:9.0f} {row[f'gpunet_over_{name}']:11.0%} "
        if theirs_row:
            row[f"{name}_over_torch"] = bound / theirs_row["samples_s"]
            line += f" {row[f'{name}_over_torch']:10.2f}x"
        else:
            line += f" {'-':>11}"
    return line
