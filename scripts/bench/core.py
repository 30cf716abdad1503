"""The run a section sees (``Bench``) and measurements in fresh processes (``run_worker``).

Each framework is measured in a process of its own: PyTorch's OpenMP threads and OpenBLAS's threads spin after
their work, and in one process each would slow the other (measured here: 30% on the small MLP). A worker is this
package run again with ``--worker SECTION``; it prints its rows as JSON on its last line.
"""
import functools
import json
import subprocess
import sys
from pathlib import Path

import gpunet
from gpunet.distributed import mpiexec

ENTRY = Path(__file__).resolve().parent  # the package's folder: ``python scripts/bench`` runs its __main__


def run_worker(section: str, argv, what: str, env=None, nproc: int = 1):
    """Run ``section``'s worker with ``argv`` (in ``nproc`` MPI ranks under ``python -m mpi4py`` when above 1)
    and return the rows it printed, or None after printing why it failed."""
    tail = [str(ENTRY), "--worker", section, *argv]
    cmd = ([sys.executable, *tail] if nproc == 1
           else [mpiexec(), "-n", str(nproc), sys.executable, "-m", "mpi4py", *tail])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{what} worker failed:\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


class Bench:
    """What a section's ``run`` gets: the flags, the run's JSON, the devices to bench and whether PyTorch is
    there. Devices and PyTorch are looked for on first use, so a section that needs neither never imports
    PyTorch or probes a GPU."""

    def __init__(self, args, results: dict):
        self.args, self.results = args, results

    def rows(self, section: str) -> list:
        """The JSON list a section adds its table's rows to."""
        return self.results.setdefault(section, [])

    @functools.cached_property
    def torch_version(self):
        """PyTorch's version, or None without it (said once, and recorded in the JSON's machine)."""
        try:
            import torch
        except ImportError:
            print("PyTorch not installed: gpunet alone (pip install torch for the side-by-side columns)")
            version = None
        else:
            version = torch.__version__
            print(f"PyTorch {version}; every worker runs on {self.args.threads} threads")
        self.results["machine"].update(torch=version, threads=self.args.threads)
        return version

    @functools.cached_property
    def torch_cuda(self) -> bool:
        if self.torch_version is None:
            return False
        import torch
        return torch.cuda.is_available()

    def has_torch(self, device_name: str) -> bool:
        wanted_torch = device_name == "cpu" or (device_name == "cuda" and self.torch_cuda)  # not on simgpu
        return self.torch_version is not None and wanted_torch

    @functools.cached_property
    def devices(self) -> list:
        """The devices of ``--devices`` that are present: the CPU, the GPU when gpunet can use one, and the
        simulated GPU (``simgpu``: a dry run of the GPU path, its host syncs counted) only by name."""
        wanted = self.args.devices.split(",")
        found = ["cpu"] if "cpu" in wanted else []
        try:
            gpunet.device("cuda")
        except gpunet.CudaUnavailable as exc:
            print(f"no GPU: {exc}")
        else:
            found += ["cuda"] if "cuda" in wanted else []
        return found + (["simgpu"] if "simgpu" in wanted else [])  # the simulated GPU: only where asked for

    def worker(self, section: str, framework: str, device_name: str, *argv):
        """``section``'s worker for one framework on one device, with the flags every such worker takes."""
        common = ["--framework", framework, "--device", device_name, "--threads", str(self.args.threads)]
        return run_worker(section, [*common, *(["--quick"] if self.args.quick else []), *argv],
                          f"{framework} {section}")
