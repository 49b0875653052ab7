"""The import rules of docs/ARCHITECTURE.md hold: layers, leaves, and where TensorFlow may live.

The layer table is read from the document itself, so the rules and the page cannot drift apart:
a new module must be placed in the table before this test passes.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'resnet_jax'
DOC = ROOT / 'docs' / 'ARCHITECTURE.md'


def layers() -> dict[str, int]:
  """{module: layer number} from the rows '| N name | `a`, `b` | ... |' of the layer table."""
  found = {}
  for number, modules in re.findall(r'^\| (\d) [^|]*\| ([^|]*) \|', DOC.read_text(), re.M):
    for module in re.findall(r'`([a-z_]+)`', modules):
      assert module not in found, f'{module} is in two layers of {DOC.name}'
      found[module] = int(number)
  return found


def imports(path: pathlib.Path, top_level_only: bool = False) -> set[str]:
  """Dotted names that ``path`` imports (``from a import b`` gives 'a' and 'a.b')."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else ast.walk(tree)
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def project_imports(path: pathlib.Path) -> set[str]:
  """The resnet_jax modules that ``path`` imports, by short name."""
  return {name.split('.')[1] for name in imports(path)
          if name.startswith('resnet_jax.') and (PACKAGE / f"{name.split('.')[1]}.py").exists()}


MODULES = sorted(p.stem for p in PACKAGE.glob('*.py') if p.stem != '__init__')


def test_every_module_has_exactly_one_layer():
  assert sorted(layers()) == MODULES


@pytest.mark.parametrize('module', MODULES)
def test_module_imports_only_its_own_layer_or_lower_ones(module):
  layer = layers()
  imported = project_imports(PACKAGE / f'{module}.py')
  higher = {m: layer[m] for m in imported if layer[m] > layer[module]}
  assert not higher, f'{module} (layer {layer[module]}) imports higher layers: {higher}'


def test_no_import_cycles():
  graph = {m: project_imports(PACKAGE / f'{m}.py') - {m} for m in MODULES}
  done, active = set(), []

  def visit(module):
    assert module not in active, f'import cycle: {" -> ".join(active + [module])}'
    if module not in done:
      active.append(module)
      for imported in graph[module]:
        visit(imported)
      active.pop()
      done.add(module)

  for module in MODULES:
    visit(module)


def test_models_import_nothing_from_the_project():
  assert project_imports(PACKAGE / 'models.py') == set()


def test_the_package_never_imports_experiments_configs_or_tests():
  for path in PACKAGE.glob('*.py'):
    outside = {n for n in imports(path) if n.split('.')[0] in ('experiments', 'configs', 'tests')}
    assert not outside, f'{path.name} imports {outside}'


def test_experiments_never_import_tests():
  for path in (ROOT / 'experiments').glob('*.py'):
    assert not {n for n in imports(path) if n.split('.')[0] == 'tests'}, path.name


def test_tensorflow_is_imported_at_module_level_only_by_the_data_layer_and_evaluation():
  layer = layers()
  allowed = {m for m, n in layer.items() if n == 4} | {'evaluation', 'eval_views'}
  importing = {p.stem for p in PACKAGE.glob('*.py')
               if {n.split('.')[0] for n in imports(p, top_level_only=True)}
               & {'tensorflow', 'tensorflow_datasets'}}
  assert importing <= allowed, importing - allowed
