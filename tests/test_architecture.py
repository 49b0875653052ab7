"""The import rules of docs/ARCHITECTURE.md hold: layers of folders, leaves, and where TensorFlow
may live.

The layer table is read from the document itself, so the rules and the page cannot drift apart:
a new module or folder must be placed in the table before this test passes.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'resnet_jax'
DOC = ROOT / 'docs' / 'ARCHITECTURE.md'
FILES = sorted(p for p in PACKAGE.rglob('*.py') if p.name != '__init__.py')


def unit(path: pathlib.Path) -> str:
  """The layer table's name for a module: its stem at the top of the package; in a folder, the
  module itself where the table names it (``data/registry``), else its folder (``data/``)."""
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  if len(parts) == 1:
    return parts[0]
  return '/'.join(parts) if '/'.join(parts) in layers() else f'{parts[0]}/'


def dotted(path: pathlib.Path) -> str:
  return '.'.join(('resnet_jax',) + path.relative_to(PACKAGE).with_suffix('').parts)


MODULES = {dotted(p): p for p in FILES}


def layers() -> dict[str, int]:
  """{unit: layer number} from the rows '| N name | `a`, `b/` | ... |' of the layer table."""
  found = {}
  for number, units in re.findall(r'^\| (\d) [^|]*\| ([^|]*) \|', DOC.read_text(), re.MULTILINE):
    for name in re.findall(r'`([a-z_]+/?(?:[a-z_]+)?)`', units):
      assert name not in found, f'{name} is in two layers of {DOC.name}'
      found[name] = int(number)
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
  """The resnet_jax modules (dotted) that ``path`` imports."""
  return {name for name in imports(path) if name in MODULES} - {dotted(path)}


def test_every_module_is_in_exactly_one_layer():
  assert sorted(layers()) == sorted({unit(p) for p in FILES})


def test_a_module_named_in_the_table_is_not_counted_with_its_folder():
  assert unit(PACKAGE / 'data' / 'registry.py') == 'data/registry'
  assert unit(PACKAGE / 'data' / 'small.py') == 'data/'


@pytest.mark.parametrize('module', sorted(MODULES))
def test_module_imports_only_its_own_layer_or_lower_ones(module):
  layer = layers()
  own = layer[unit(MODULES[module])]
  higher = {m: layer[unit(MODULES[m])] for m in project_imports(MODULES[module])
            if layer[unit(MODULES[m])] > own}
  assert not higher, f'{module} (layer {own}) imports higher layers: {higher}'


def test_no_import_cycles():
  graph = {m: project_imports(p) for m, p in MODULES.items()}
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


@pytest.mark.parametrize('leaf', ['models/', 'errors'])
def test_leaves_import_nothing_from_the_project(leaf):
  members = [path for path in FILES if unit(path) == leaf]
  assert members
  for path in members:
    outside = {m for m in project_imports(path) if unit(MODULES[m]) != leaf}
    assert not outside, f'{path} imports {outside}'


def test_the_package_never_imports_the_commands_around_it():
  for path in FILES:
    outside = {n for n in imports(path)
               if n.split('.')[0] in ('experiments', 'configs', 'tests', 'tools', 'benchmarks')}
    assert not outside, f'{path} imports {outside}'


def test_commands_never_import_tests():
  for folder in ('experiments', 'tools', 'benchmarks'):
    for path in (ROOT / folder).glob('*.py'):
      assert not {n for n in imports(path) if n.split('.')[0] == 'tests'}, path


def test_tensorflow_is_imported_at_module_level_only_by_data_evaluation_and_testing():
  importing = {unit(p) for p in FILES
               if {n.split('.')[0] for n in imports(p, top_level_only=True)}
               & {'tensorflow', 'tensorflow_datasets'}}
  assert importing <= {'data/', 'evaluation/', 'testing/'}, importing


def test_the_readme_is_read_in_five_minutes():
  lines = (ROOT / 'README.md').read_text().splitlines()
  assert len(lines) <= 150, f'README.md has {len(lines)} lines; move detail to docs/'
  long = [n for n, line in enumerate(lines, 1) if len(line) > 120]
  assert not long, f'README.md lines over 120 characters: {long}'


def references(path: pathlib.Path, name: str) -> int:
  """How many times ``path``'s code uses ``name`` (``x.name`` or a bare ``name``)."""
  return sum(1 for node in ast.walk(ast.parse(path.read_text()))
             if (isinstance(node, ast.Attribute) and node.attr == name)
             or (isinstance(node, ast.Name) and node.id == name))


CODE = [p for folder in ('resnet_jax', 'tools', 'experiments', 'benchmarks')
        for p in (ROOT / folder).rglob('*.py')] + [ROOT / 'main.py']


def test_a_dataset_is_looked_up_in_one_place():
  """Its facts come from ``specs.spec_of`` through ``datasets.facts`` only; everything else
  reads them from the run's plan."""
  lookups = {str(p.relative_to(ROOT)): references(p, 'spec_of') for p in CODE
             if references(p, 'spec_of')}
  assert lookups == {'resnet_jax/data/datasets.py': 1}, lookups


def test_steps_per_epoch_has_one_formula():
  """Only ``run_plan.resolve`` divides a split by the batch; the rest read ``plan.steps_per_epoch``."""
  assigning = {str(p.relative_to(ROOT)) for p in CODE
               if re.search(r'^\s*steps_per_epoch\s*=\s*\S+\s*//', p.read_text(), re.M)}
  assert assigning <= {'resnet_jax/run_plan.py', 'benchmarks/step.py'}, assigning
