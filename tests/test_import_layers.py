"""The import graph climbs only downwards: every package imports only packages below it, so the
libraries stay free of workflows and of each other's circles, and the kernels depend on jax alone.

Read from the source with `ast` (imports inside functions count too), not from `sys.modules`.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top. A package may import its own modules and those of lower layers only.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors"}),
    frozenset({"storage"}),
    frozenset({"platform", "hardware", "config", "locks"}),
    frozenset({"outputs"}),  # output manifests and staging: a staging folder's owner is checked like a lock's
    frozenset({"encoding"}),
    frozenset({"render"}),
    frozenset({"data"}),
    frozenset({"attention"}),
    frozenset({"model"}),
    frozenset({"train"}),
    frozenset({"sample", "eval"}),
    frozenset({"critic"}),
    frozenset({"app"}),
    frozenset({"bench", "cli"}),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}
# Command-line plumbing that benchmarks may share with the commands (argument parsing, nothing else).
SHARED_CLI = "musenet_jax.cli.common"


def _package(module: str) -> str:
    """`musenet_jax.sample.sampler` -> `sample`; `musenet_jax.config` -> `config`."""
    return module.split(".")[1]


def _imports(path: pathlib.Path, module: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.rsplit(".", node.level)[0]
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def _modules(package: str) -> list[tuple[str, pathlib.Path]]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _edges() -> list[tuple[str, str]]:
    edges = []
    for module, path in _modules("musenet_jax"):
        for name in _imports(path, module):
            if name.startswith("musenet_jax.") and name.count(".") >= 1:
                edges.append((module, name))
    return edges


def _violations() -> list[str]:
    bad = []
    for module, target in _edges():
        if module.count(".") == 0:
            continue  # the package's own __init__
        source, dest = _package(module), _package(target)
        if source == dest or dest not in LAYER_OF:
            continue
        if module == "musenet_jax.config" and target.endswith(".config"):
            continue  # the composite config gathers every package's section dataclass
        if target.startswith(SHARED_CLI) and source == "bench":
            continue
        if LAYER_OF[dest] >= LAYER_OF[source] and not (
            source in ("bench", "cli") and dest in ("bench", "cli")
        ):
            bad.append(f"{module} imports {target} ({source} -> {dest})")
        if source == "bench" and dest == "cli" and not target.startswith(SHARED_CLI):
            bad.append(f"{module} imports {target}: library logic belongs below the CLI")
    return bad


def test_every_package_is_in_a_layer():
    packages = {
        p.name for p in (ROOT / "musenet_jax").iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    modules = {p.stem for p in (ROOT / "musenet_jax").glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LAYER_OF) | {"configs"}, (packages | modules) - set(LAYER_OF)


def test_no_import_climbs_a_layer():
    assert _violations() == []


def _node(module: str) -> str:
    """The package graph's node of a module: its package, except a config section (`musenet_jax.X.config`),
    a leaf of its own that the composite `musenet_jax.config` gathers (see the test that keeps it a leaf)."""
    parts = module.split(".")
    if len(parts) == 3 and parts[2] == "config":
        return f"{parts[1]}.config"
    return parts[1]


def _package_graph() -> dict[str, set[str]]:
    """Package -> the packages it imports (every import, in functions too)."""
    graph: dict[str, set[str]] = {}
    for module, target in _edges():
        if module.count(".") == 0:
            continue  # the package's own __init__
        source, dest = _node(module), _node(target)
        graph.setdefault(source, set())
        if source != dest:
            graph[source].add(dest)
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as a path that returns to its start, or [] when there is none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        for dest in sorted(graph.get(node, ())):
            found = visit(dest, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


def test_the_packages_form_no_cycle():
    """Transitively: no package reaches itself through the imports of others (config, data, model,
    attention, train, sample, eval, critic, app, cli, bench...)."""
    assert _a_cycle(_package_graph()) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_import(tmp_path, monkeypatch):
    """The check can fail: eval -> model at the top and model -> eval inside a function is a cycle."""
    fake_root = tmp_path / "repo"
    for package in ("eval", "model"):
        (fake_root / "musenet_jax" / package).mkdir(parents=True)
        (fake_root / "musenet_jax" / package / "__init__.py").write_text("")
    (fake_root / "musenet_jax" / "__init__.py").write_text("")
    (fake_root / "musenet_jax" / "eval" / "nll.py").write_text("from musenet_jax.model import loss\n")
    (fake_root / "musenet_jax" / "model" / "loss.py").write_text(
        "def token_nll():\n    from musenet_jax.eval import nll\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    assert _a_cycle(_package_graph()) in (["eval", "model", "eval"], ["model", "eval", "model"])


def test_config_sections_are_leaves():
    """A section imports nothing of the project but errors, so gathering them in `musenet_jax.config`
    ties no package to another."""
    for module, path in _modules("musenet_jax"):
        if module.count(".") == 2 and module.endswith(".config"):
            project = {n for n in _imports(path, module) if n.startswith("musenet_jax.")}
            assert project <= {"musenet_jax.errors"}, f"{module} imports {sorted(project)}"


# Who sees a whole run's `Config`: workflows, the command line, and the train loop with its setup,
# compile and checkpoints (which save and read a run's config). Libraries take the sections they use.
WHOLE_CONFIG_READERS = (
    "musenet_jax.app.",
    "musenet_jax.cli.",
    "musenet_jax.bench.",
    "musenet_jax.train.loop",
    "musenet_jax.train.setup",
    "musenet_jax.train.compile",
    "musenet_jax.train.checkpoint",
)


def test_libraries_take_their_config_sections_not_the_whole_config():
    readers = {module for module, target in _edges() if target == "musenet_jax.config"}
    assert sorted(m for m in readers if not m.startswith(WHOLE_CONFIG_READERS)) == []


def test_sample_critic_and_eval_import_no_workflow_and_form_no_circle():
    edges = {(_package(m), _package(t)) for m, t in _edges() if m.count(".") >= 1}
    for library in ("sample", "critic", "eval"):
        assert (library, "app") not in edges and (library, "cli") not in edges
    assert not ({("sample", "critic"), ("critic", "sample")} <= edges)
    assert not ({("sample", "eval"), ("eval", "sample")} <= edges)
    assert not ({("eval", "critic"), ("critic", "eval")} <= edges)


@pytest.mark.parametrize("module,path", _modules("pallas_kernels"), ids=lambda x: str(x))
def test_the_kernels_depend_on_jax_alone(module, path):
    project = {n for n in _imports(path, module) if n.split(".")[0] == "musenet_jax"}
    assert project == set(), f"{module} imports {sorted(project)}"


def test_the_checker_sees_a_climbing_import(tmp_path, monkeypatch):
    """The rule can fail: a model module importing a workflow is reported."""
    fake_root = tmp_path / "repo"
    (fake_root / "musenet_jax" / "model").mkdir(parents=True)
    (fake_root / "musenet_jax" / "__init__.py").write_text("")
    (fake_root / "musenet_jax" / "model" / "__init__.py").write_text("")
    (fake_root / "musenet_jax" / "model" / "bad.py").write_text("from musenet_jax.app.run import load_run\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    assert _violations() == ["musenet_jax.model.bad imports musenet_jax.app.run (model -> app)"]


# Library modules import at the top; a function may import only these, each for a stated reason: optional
# extras (Beam, FluidSynth), music21 (seconds to import, needed by one corpus source only) and libtpu's
# topologies (read after the environment that quiets its TPU probe is set).
LAZY_ALLOWED = ("apache_beam", "fluidsynth", "music21", "jax.experimental", "musenet_jax.data.beam_convert")


def test_library_modules_import_at_the_top():
    late = []
    for package in ("musenet_jax", "pallas_kernels"):
        for module, path in _modules(package):
            if module.split(".")[1:2] in (["cli"], ["bench"]):
                continue  # the CLI imports lazily on purpose: `musenet-jax encode` starts without JAX
            tree = ast.parse(path.read_text(), str(path))
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        names = [node.module or ""]
                    else:
                        continue
                    late += [
                        f"{module}.{function.name} imports {n}"
                        for n in names
                        if not n.startswith(LAZY_ALLOWED)
                    ]
    assert late == []


def test_test_files_have_unique_names():
    """Test folders have no __init__.py, so pytest imports test files by name: two of one name collide."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
