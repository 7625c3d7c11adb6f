r"""Peak resident memory of a whole `launchers.simulate` run: the launcher and its TFF worker.

  .venv/bin/python -m benchmarks.run_memory [--output=results/benchmarks/run_memory.json] \
      [--interval=0.5] -- --algorithm=fedrap --partition=per_user --client_shards=32 --rounds=3 ...

Everything after `--` is passed to `launchers.simulate` (default `--output_dir`: a fresh temporary
folder, removed afterwards). The run is a subprocess; every `--interval` seconds this reads the peak
resident memory the kernel records (VmHWM in /proc/PID/status) of the launcher and of each TFF worker
it started (`worker_processes.watch_peaks`), keeping the last value read while each lives.

Writes JSON (`--output`) and prints one line: the launcher's and the worker's peak in GiB, the run's
seconds, its exit status and the rounds it ran (`rounds.csv`). The memory a run needs is about
the sum of the two peaks: size a machine or the runs beside it with it (docs/RESULTS.md, Table 3;
docs/SPEED.md, "Seconds per round").

The JSON also has the worker's peak after each round (`worker_peak_gib_by_round`) and its growth a
round over the second half of the run (`worker_growth_gib_per_round`; the first rounds are left out
since the worker fills its heap there). A worker that grows from round to round limits how long a
run can go: compare glibc settings with `MALLOC_ARENA_MAX=N` before the command (recorded as
`malloc_arena_max`; None is the worker's default, one arena per core,
`execution.WorkerConfig.malloc_arenas`; 16 is glibc's own default on 2 cores).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from tff_rqfed import results_io
from tff_rqfed import worker_processes

_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/run_memory.json', 'JSON output.')
_INTERVAL = flags.DEFINE_float('interval', 0.5, 'Seconds between two reads of the peaks.')


def _rounds_run(output_dir: pathlib.Path) -> int:
  rounds = output_dir / 'rounds.csv'
  return max(len(rounds.read_text().splitlines()) - 1, 0) if rounds.exists() else 0


def _output_dir(simulate_flags: list[str]) -> pathlib.Path | None:
  """The `--output_dir` of `launchers.simulate` flags, in its `--output_dir=X` or `--output_dir X`
  form (the last one given wins, as in absl), or None."""
  found = None
  for index, flag in enumerate(simulate_flags):
    if flag.startswith('--output_dir='):
      found = flag.split('=', 1)[1]
    elif flag == '--output_dir':
      if index + 1 == len(simulate_flags):
        raise app.UsageError('--output_dir is missing its value')
      found = simulate_flags[index + 1]
  return None if found is None else pathlib.Path(found)


def _growth_per_round(by_round: list) -> float | None:
  """(last - middle) / rounds between them, over the second half of the rounds; None under 4 rounds."""
  middle = len(by_round) // 2
  if len(by_round) < 4 or by_round[middle] is None or by_round[-1] is None:
    return None
  return (by_round[-1] - by_round[middle]) / (len(by_round) - 1 - middle)


def main(argv):
  simulate_flags = list(argv[1:])
  if _INTERVAL.value <= 0:
    raise app.UsageError(f'--interval must be > 0, got {_INTERVAL.value!r}')
  with tempfile.TemporaryDirectory(prefix='run_memory-') as scratch:
    output_dir = _output_dir(simulate_flags)
    if output_dir is None:
      output_dir = pathlib.Path(scratch) / 'run'
      simulate_flags.append(f'--output_dir={output_dir}')
    command = [sys.executable, '-m', 'launchers.simulate', '--progress=false', *simulate_flags]
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as process:
      peaks = worker_processes.watch_peaks(process, _INTERVAL.value,
                                           rounds_done=lambda: _rounds_run(output_dir))
    result = {'command': command[1:], **peaks, 'seconds': time.perf_counter() - start,
              'exit_status': process.returncode, 'rounds_run': _rounds_run(output_dir),
              'worker_growth_gib_per_round': _growth_per_round(peaks['worker_peak_gib_by_round']),
              'malloc_arena_max': os.environ.get('MALLOC_ARENA_MAX')}
  results_io.write_atomic(pathlib.Path(_OUTPUT.value), json.dumps(result, indent=2) + '\n')
  shown = {key: (f'{value:.2f}' if isinstance(value, float) else value) for key, value in result.items()
           if key not in ('command', 'worker_peak_gib_by_round')}
  print(json.dumps(shown))


if __name__ == '__main__':
  app.run(main)
