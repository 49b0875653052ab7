"""The console a person reads: number formats, the training and evaluation lines, the progress
bar on a terminal (the quickstart's whole console: tests/test_train.py)."""

import io
import logging

import pytest
from absl import logging as absl_logging

from resnet_jax import console, reporting


@pytest.mark.parametrize('seconds, text', [
    (0.4, '0 s'), (44.6, '45 s'), (59.4, '59 s'), (60, '1 min 00 s'), (754, '12 min 34 s'),
    (3599, '59 min 59 s'), (3600, '1 h 00 min'), (11_100, '3 h 05 min'), (-3, '0 s')])
def test_durations_read_in_seconds_under_an_hour(seconds, text):
  assert console.duration(seconds) == text


def test_errors_count_wrong_examples_only_where_they_are_whole():
  assert console.errors('test', 2 / 297, 0.0, 297) == 'test error 0.67 % (2/297), top-5 0.00 %'
  assert console.errors('test', 2.5 / 297, 0.0, 297) == 'test error 0.84 %, top-5 0.00 %'
  assert console.errors('v2', 0.25, 0.125) == 'v2 error 25.00 %, top-5 12.50 %'


def lines_of(caplog):
  return [r.getMessage() for r in caplog.records if r.pathname.endswith('reporting.py')]


def test_a_line_per_interval_with_speed_and_eta_and_a_line_per_evaluated_set(caplog):
  caplog.set_level(logging.INFO)
  writer = reporting.ConsoleWriter(368, {'eval_': 'test', 'v2/': 'v2'})
  # As the run writes them: the progress report's speed, then the metrics of the interval.
  writer.write_scalars(46, {'steps_per_sec': 10.0, 'uptime': 9.0, 'train_images_per_sec': 640.0,
                            'train_images_per_sec_per_device': 640.0})
  writer.write_scalars(46, {'train_loss': 0.15546, 'train_error_top1': 0.0455163,
                            'train_error_top5': 0.0, 'train_learning_rate': 0.1})
  writer.write_scalars(92, {'eval_loss': 0.0405742, 'eval_error_top1': 5 / 297,
                            'eval_error_top5': 0.0})
  writer.write_scalars(92, {'v2/loss': 1.5, 'v2/error_top1': 0.25, 'v2/error_top5': 0.0625})
  writer.write_scalars(368, {'train_loss': 0.0017, 'train_error_top1': 0.0,
                             'train_error_top5': 0.0, 'train_learning_rate': 0.001})
  # 322 steps left at 10 steps/s: 32 s; no ETA on the last line.
  assert lines_of(caplog) == [
      'step 46/368 (12 %): loss 0.1555, error 4.55 %, lr 0.1, 640 images/s, ETA 32 s',
      'step 92: test error 1.68 %, top-5 0.00 %, loss 0.04057',
      'step 92: v2 error 25.00 %, top-5 6.25 %, loss 1.5',
      'step 368/368 (100 %): loss 0.0017, error 0.00 %, lr 0.001, 640 images/s']


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_the_progress_bar_draws_on_a_terminal_only_and_lines_print_above_it(monkeypatch):
  handler = absl_logging.get_absl_handler().python_handler
  original = handler.stream
  pipe = io.StringIO()
  monkeypatch.setattr('sys.stderr', pipe)
  bar = console.ProgressBar(10, 0)
  bar(5)
  bar.close()
  assert pipe.getvalue() == '' and handler.stream is original

  terminal = Terminal()
  monkeypatch.setattr('sys.stderr', terminal)
  bar = console.ProgressBar(10, 4)
  assert handler.stream is not original
  handler.stream.write('a line of the log\n')
  bar(10)
  bar.close()
  assert handler.stream is original
  drawn = terminal.getvalue()
  assert 'a line of the log\n' in drawn
  assert '4/10' in drawn and '10/10' in drawn  # From the resumed step to the end.
  assert console.ProgressBar(10, 0, enabled=False)._bar is None  # pylint: disable=protected-access
