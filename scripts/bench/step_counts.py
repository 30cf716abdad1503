"""What one training step does on a GPU besides taking time: gpunet's own kernel launches, every kernel the GPU
ran (whoever launched it), and the host synchronisations it made.

A host synchronisation (the host waiting for the GPU: a stream or device synchronize, a blocking copy such as
reading a value back) stalls the launch queue, so a step that makes none lets the host run ahead. On the CPU a
step makes none by construction: there is no queue, every op has finished when it returns.
"""
import re
import sys

# CUDA runtime and driver calls that make the host wait for the GPU (the Async copies do not).
HOST_SYNC_CALLS = re.compile(r"^cu(da)?(Device|Stream|Event|Ctx)Synchronize|^cudaMemcpy(2D)?$"
                             r"|^cuMemcpy(DtoH|HtoD|DtoD)?(_v2)?$")


def count_gpunet_launches(dev, step):
    """gpunet's own kernel launches in one ``step()`` (not CuPy's elementwise ops or cuBLAS), from the device's
    public counter; None on a device whose ops are not launched kernels."""
    before = dev.kernel_launches
    if before is None:
        return None
    step()
    return dev.kernel_launches - before


def count_host_syncs(dev, step):
    """The host synchronisations one ``step()`` makes, by the simulated GPU's own counter
    (``gpunet.devices.simgpu.host_syncs``) on a device over it; None elsewhere (a real GPU's are counted by
    the profiler, :func:`profile_step`)."""
    from gpunet.devices import simgpu

    if getattr(dev, "cupy", None) is not simgpu.cupy:
        return None
    before = simgpu.host_syncs()
    step()
    return simgpu.host_syncs() - before


def profile_step(step, synchronize):
    """``{"kernels": every kernel and copy the GPU ran in one step, "host_syncs": the synchronising CUDA calls
    the host made in it}``, as CUPTI sees them through PyTorch's profiler (process-wide: CuPy's and cuBLAS's calls
    too). The final ``synchronize`` that collects the step's kernels is profiled alone as well and subtracted.
    None without a CUDA PyTorch."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
        if not torch.cuda.is_available():
            return None

        def counts(fn):
            synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                synchronize()
            events = prof.events()
            return (sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
                    sum(1 for e in events if HOST_SYNC_CALLS.match(e.name)))
        kernels, syncs = counts(step)
        _, own_syncs = counts(lambda: None)
        return {"kernels": kernels, "host_syncs": syncs - own_syncs}
    except Exception as exc:  # a profiler that cannot start must not cost the whole bench
        print(f"kernel and sync counts unavailable: {exc}", file=sys.stderr)
        return None
