"""The layering the architecture promises (docs/architecture.md): no module imports a module above it, and no
module imports another gpunet module inside a function (the way an import cycle is usually dodged)."""
import ast
from pathlib import Path

import gpunet

PACKAGE = Path(gpunet.__file__).parent

# Lowest first. A module may import modules of a lower layer, and of its own layer only within its own package.
LAYERS = [
    {"gpunet.dtypes"},
    {"gpunet.errors", "gpunet.seeding", "gpunet.native", "gpunet.numerics", "gpunet.machine",
     "gpunet.env", "gpunet.kinds"},
    {"gpunet.cuda", "gpunet.cpu_kernels"},
    {"gpunet.devices"},
    {"gpunet.ops"},
    {"gpunet.nn", "gpunet.optim", "gpunet.gradcheck"},
    {"gpunet.trainer"},
    {"gpunet.data", "gpunet.checkpoint", "gpunet.plots", "gpunet.distributed", "gpunet.recipes",
     "gpunet.info"},
    {"gpunet.training"},
    {"gpunet.cli"},
    {"gpunet.__main__", "gpunet"},
]


def unit(module: str) -> str:
    """The layer member a module belongs to: its package below gpunet, or the module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def rank(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path = PACKAGE):
    """``(imported gpunet module, line, at module level)`` for every import in ``path``."""
    name = module_name(path, package)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target == "gpunet" or target.startswith("gpunet."):
                yield target, node.lineno, id(node) in top_level


def layering_violations(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        for target, line, top in imports(path, package):
            where = f"{path.relative_to(package.parent)}:{line} imports {target}"
            if not top:
                wrong.append(f"{where} inside a function or block")
            elif rank(target) > rank(name) or (rank(target) == rank(name) and unit(target) != unit(name)
                                               and unit(name) != "gpunet"):
                wrong.append(f"{where}, a layer above or beside it")
    return wrong


def test_no_module_imports_one_above_it_or_inside_a_function():
    wrong = layering_violations()
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_violation(tmp_path):
    """Mutation test, on a copy of the package: an ops module importing training, and a function-local import,
    are both reported."""
    import shutil

    copy = tmp_path / "gpunet"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.gz"))
    (copy / "ops" / "_layout_probe.py").write_text("from ..training import fit\n\ndef f():\n    from .. import cli\n")
    message = "\n".join(layering_violations(copy))
    assert "_layout_probe.py:1 imports gpunet.training, a layer above" in message
    assert "_layout_probe.py:4 imports gpunet.cli inside a function" in message
    assert message.count("\n") == 1  # nothing else


def test_ops_nn_and_optim_never_ask_which_device_they_are_on():
    """The device split lives in gpunet/devices alone: no launcher, kernel or compiled-kernel test above it."""
    for folder in ("ops", "nn", "optim"):
        for path in (PACKAGE / folder).glob("*.py"):
            text = path.read_text()
            for word in (".launcher", ".kernels", "compiled(", "cpu_kernels", 'name == "cpu"', "isinstance(dev"):
                assert word not in text, f"{path.name} mentions {word!r}"
