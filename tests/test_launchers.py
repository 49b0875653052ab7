"""The launchers without a cluster: the batch script bash runs, the GPU split, local runs at
once, the TPU commands, and flags refused before any run is looked at.

tests/test_slurm.py runs the batch script under a real SLURM.
"""

import os
import subprocess
import sys

import pytest
from absl import app

from experiments import launchers, run, slurm_cluster, slurm_launcher
from tests.harness import ROOT

RESOURCES = slurm_launcher.SlurmResources(
    nodes=2, gpus_per_node=8, cpus_per_task=12, time='1-00:00:00', time_limit_margin=600,
    partition='gpu', account='lab', max_running_tasks=3, extra=('--constraint=h100',))


def cifar_runs():
  return run.sweep_runs('cifar_1202', 2)  # resnet110 and resnet1202, seeds 0 and 1.


def test_batch_script_asks_for_the_nodes_and_one_process_per_gpu():
  script = slurm_launcher.sbatch_script('cifar_1202', cifar_runs(), '/shared/my runs', RESOURCES,
                                   '/shared/logs')
  assert [line for line in script.splitlines() if line.startswith('#SBATCH')] == [
      '#SBATCH --job-name=cifar_1202', '#SBATCH --array=0-3%3', '#SBATCH --nodes=2',
      '#SBATCH --ntasks-per-node=8', '#SBATCH --cpus-per-task=12', '#SBATCH --gpus-per-node=8',
      '#SBATCH --time=1-00:00:00', '#SBATCH --partition=gpu', '#SBATCH --account=lab',
      '#SBATCH --output=/shared/logs/%x_%A_%a.out', '#SBATCH --open-mode=append',
      '#SBATCH --requeue', '#SBATCH --signal=B:USR1@600', '#SBATCH --constraint=h100']


@pytest.mark.parametrize('task, name, workdir, seed', [
    (0, 'resnet110/seed0', '/shared/my runs/resnet110/seed0', 0),
    (3, 'resnet1202/seed1', '/shared/my runs/resnet1202/seed1', 1),
])
@pytest.mark.e2e
def test_each_array_task_runs_its_own_run_through_bash(task, name, workdir, seed, tmp_path):
  script = slurm_launcher.sbatch_script('cifar_1202', cifar_runs(), '/shared/my runs', RESOURCES,
                                   '/shared/logs')
  # bash reads the whole script; the part up to the case statement picks the task's run.
  assert subprocess.run(['bash', '-n'], input=script, text=True, check=False).returncode == 0
  picked = script[:script.index('esac') + 4] + '\nprintf "%s\\n" "$run" "${argv[@]}"\n'
  result = subprocess.run(['bash'], input=picked, capture_output=True, text=True, check=True,
                          env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(task)))
  net = name.split('/')[0]
  assert result.stdout.splitlines() == [
      name, sys.executable, os.path.join(ROOT, 'main.py'), f'--config=configs/cifar10.py:{net}',
      f'--workdir={workdir}', f'--config.seed={seed}']


@pytest.mark.parametrize('resources, message', [
    (slurm_launcher.SlurmResources(gpus_per_node=8, tasks_per_node=1), 'one process per GPU'),
    (slurm_launcher.SlurmResources(nodes=0), '--nodes=0 must be at least 1'),
    (slurm_launcher.SlurmResources(max_running_tasks=-1), 'must not be negative'),
])
def test_requests_slurm_or_jax_cannot_serve_are_usage_errors(resources, message):
  with pytest.raises(app.UsageError, match=message):
    slurm_launcher.sbatch_script('cifar_1202', cifar_runs(), '/runs', resources, '/logs')


def test_the_scripts_comment_quotes_the_root():
  script = slurm_launcher.sbatch_script('cifar_1202', cifar_runs(), '/shared/my runs', RESOURCES,
                                   '/shared/logs')
  assert script.splitlines()[1] == (
      "# cifar_1202: 4 runs into '/shared/my runs', one array task each.")


INJECTED = '\ntouch /tmp/injected #'
# Each flag's value in a generated script, with a line break and a command after it.
BAD_VALUES = {
    '--root': dict(root='/shared/runs' + INJECTED),
    '--run_logs_dir': dict(log_dir='/shared/logs' + INJECTED),
    '--time': dict(resources=RESOURCES._replace(time='1:00:00' + INJECTED)),
    '--partition': dict(resources=RESOURCES._replace(partition='gpu' + INJECTED)),
    '--account': dict(resources=RESOURCES._replace(account='lab' + INJECTED)),
    '--sbatch_arg': dict(resources=RESOURCES._replace(extra=('--qos=high\r' + INJECTED,))),
    '--override': dict(runs=run.with_overrides(cifar_runs(), {'dataset.data_dir': '/d\r'})),
    '--sweep': dict(sweep='cifar_1202' + INJECTED),
}


@pytest.mark.parametrize('flag', BAD_VALUES)
def test_a_control_character_in_any_value_of_the_script_is_refused_naming_its_flag(flag):
  arguments = {**dict(sweep='cifar_1202', runs=cifar_runs(), root='/shared/runs',
                      resources=RESOURCES, log_dir='/shared/logs'), **BAD_VALUES[flag]}
  with pytest.raises(app.UsageError, match=f'^{flag}=.* holds a control character'):
    slurm_launcher.sbatch_script(**arguments)


def node(cpus, gpus=0):
  return slurm_cluster.Node('n', cpus, gpus)


@pytest.mark.parametrize('resources, nodes, problems', [
    (slurm_launcher.SlurmResources(gpus_per_node=0), [node(2)],
     ['1 process(es) a node x --cpus_per_task=8 is 8 CPUs a node, but its largest node has 2: '
      'set --cpus_per_task=2']),
    (RESOURCES, [node(64, 8)] * 4,
     ['8 process(es) a node x --cpus_per_task=12 is 96 CPUs a node, but its largest node has 64: '
      'set --cpus_per_task=8']),
    (slurm_launcher.SlurmResources(gpus_per_node=8, cpus_per_task=4), [node(64, 4), node(32, 2)],
     ['--gpus_per_node=8, but its nodes have at most 4 GPUs: set --gpus_per_node=4']),
    (RESOURCES._replace(nodes=3), [node(96, 8), node(96, 8), node(128, 4)],
     ['--nodes=3, but 2 of its nodes have 96 CPUs and 8 GPUs: set --nodes=2']),
    (RESOURCES, [node(96, 8), node(96, 8)], []),
    (RESOURCES, [], []),  # sinfo told nothing: nothing is held against the job.
])
def test_a_request_larger_than_the_nodes_names_the_flag_to_change(resources, nodes, problems):
  assert slurm_launcher.oversize_problems(resources, nodes) == problems


@pytest.mark.parametrize('reasons, nodes, words', [
    ({'Priority'}, [node(2)], None),
    ({'Resources'}, [node(8)], None),  # It fits a node: it waits for one to free up.
    ({'Resources'}, [node(2)], 'it pends (Resources: it asks for more than any node has)'),
    ({'PartitionConfig'}, [node(2)], 'On the default partition: 1 process(es) a node x '
     '--cpus_per_task=8 is 8 CPUs a node, but its largest node has 2: set --cpus_per_task=2.'),
    ({'ReqNodeNotAvail'}, [node(8)], 'needs nodes that are not available (down, drained or '
     'reserved): choose another --partition'),
])
def test_a_job_is_given_up_only_for_a_reason_no_wait_ends(reasons, nodes, words, monkeypatch):
  monkeypatch.setattr(slurm_cluster, 'pending_reasons', lambda job: set(reasons))
  monkeypatch.setattr(slurm_cluster, 'nodes', lambda partition: nodes)
  message = slurm_launcher.never_starts('77', slurm_launcher.SlurmResources(gpus_per_node=0))
  if words is None:
    assert message is None
  else:
    assert message.startswith('SLURM will never start job 77: it pends (') and words in message


def test_sinfo_gpus_are_counted_in_every_form_it_prints_them():
  assert [slurm_cluster.gpus(gres) for gres in (
      'gpu:8', 'gpu:h100:4(S:0-1),gpu:a100:2', 'gpu:1g.5gb:7(S:0,1)', 'mps:100,gpu:2', '(null)')
  ] == [8, 6, 7, 2, 0]


def test_cpu_nodes_run_one_process_each_unless_asked_for_more():
  assert slurm_launcher.SlurmResources(gpus_per_node=0).processes_per_node() == 1
  assert slurm_launcher.SlurmResources(gpus_per_node=0, tasks_per_node=2).processes_per_node() == 2
  assert slurm_launcher.SlurmResources(gpus_per_node=4).processes_per_node() == 4


def test_gpus_split_evenly_over_the_runs_at_once(monkeypatch):
  gpus = [str(i) for i in range(8)]
  assert launchers.split_gpus(gpus, 4) == ['0,1', '2,3', '4,5', '6,7']
  assert launchers.split_gpus(gpus, 1) == ['0,1,2,3,4,5,6,7']
  assert launchers.split_gpus(['3', '5', '6'], 2) == ['3', '5']  # GPU 6 stays idle.
  assert launchers.split_gpus([], 3) == [None, None, None]  # No GPUs: the runs share the CPU.
  with pytest.raises(app.UsageError, match='needs a GPU per run, but this host has 1'):
    launchers.split_gpus(['0'], 2)
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert launchers.host_gpus() == ['2', '3']


# Each process: marks itself running with its GPUs, waits for a peer where it expects one,
# records the GPUs of the runs beside it, and exits with the status it was given.
PEER = '''
import os, pathlib, sys, time
folder, name, expect_peer, status = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
mine = folder / (name + '.running')
mine.write_text(os.environ['CUDA_VISIBLE_DEVICES'])
others = lambda: [p.read_text() for p in folder.glob('*.running') if p != mine]
deadline = time.time() + 60
while expect_peer == '1' and not others() and time.time() < deadline:
  time.sleep(0.05)
(folder / (name + '.seen')).write_text(mine.read_text() + ' ' + '|'.join(others()))
time.sleep(0.2)
mine.unlink()
sys.exit(int(status))
'''


@pytest.mark.e2e
def test_local_runs_at_once_each_on_its_own_gpus(tmp_path):
  processes = [launchers.Process(name, [sys.executable, '-c', PEER, str(tmp_path), name, peer,
                                        status], None)
               for name, peer, status in (('a', '1', '0'), ('b', '1', '0'), ('c', '0', '3'))]
  failed = launchers.run_processes(processes, ['0,1', '2,3'])
  assert failed == ['c']
  seen = {name: (tmp_path / f'{name}.seen').read_text().split(' ') for name in 'abc'}
  # a and b ran together, on the two halves; c waited for a free half.
  assert {seen['a'][0], seen['b'][0]} == {'0,1', '2,3'}
  assert seen['a'][1] == seen['b'][0] and seen['b'][1] == seen['a'][0]
  assert seen['c'][0] in ('0,1', '2,3') and seen['c'][0] not in seen['c'][1].split('|')


def test_tpu_commands_run_main_on_every_host_of_the_slice():
  runs = run.sweep_runs('imagenet_deep', 1)[:1]
  assert launchers.tpu_commands(runs, 'gs://b/deep', 'my-pod', 'us-central2-b', 'proj') == [[
      'gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-pod', '--zone=us-central2-b',
      '--project=proj', '--worker=all',
      ('--command=cd resnet_jax && python main.py --config=configs/imagenet.py:resnet50 '
       '--workdir=gs://b/deep/resnet50/seed0 --config.seed=0')]]


def cli(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=ROOT, check=False,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('args, message', [
    (['--launcher=tpu', '--tpu=pod', '--zone=z'], 'needs a --root that every TPU host can'),
    (['--launcher=tpu'], 'needs --tpu=NAME and --zone=ZONE'),
    (['--launcher=slurm', '--gpus_per_node=8', '--tasks_per_node=2'], 'one process per GPU'),
    (['--only=resnet56'], '--only=resnet56: no such net or run in this sweep'),
])
@pytest.mark.e2e
def test_bad_launcher_flags_are_refused_before_any_run_is_looked_at(args, message):
  result = cli('--sweep=cifar_1202', '--root=/nonexistent/runs', *args)
  assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
  assert not os.path.exists('/nonexistent')
