r"""Serves one TFF worker for `launchers.simulate --workers=host:port,...` (runs until stopped).

  python -m launchers.worker --port=8000

This is TFF 0.87's own executor service, `worker_binary` from the tensorflow-federated wheel, started
with the settings `execution.WorkerConfig` gives the local worker (its concurrency, TensorFlow thread
pools and malloc settings) and TFF's 2 GB gRPC message limit. It listens on every interface over
insecure gRPC with no authentication: run it on a private network, or bind the simulation to it
through an SSH tunnel (`ssh -N -L 8000:localhost:8000 host`, then `--workers=localhost:8000`).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from tff_rqfed import execution

_PORT = flags.DEFINE_integer('port', None, 'Port to serve on.', required=True, lower_bound=1,
                             upper_bound=65535)
_CALLS = flags.DEFINE_integer('max_concurrent_computation_calls', None,
                              'Client computations run at once (-1: no limit; default one per core).')
_INTER = flags.DEFINE_integer('inter_op_threads', None, 'TF inter-op threads (0: TF default; default '
                              'one per core).', lower_bound=0)
_INTRA = flags.DEFINE_integer('intra_op_threads', None, 'TF intra-op threads (0: TF default; default 1).',
                              lower_bound=0)
_ARENAS = flags.DEFINE_integer('malloc_arenas', None, 'glibc malloc arenas (MALLOC_ARENA_MAX; 0: glibc '
                               'default; default one per core, which keeps the worker from growing '
                               'round after round).', lower_bound=0)


def main(argv):
  del argv
  given = {'max_concurrent_computation_calls': _CALLS.value, 'inter_op_threads': _INTER.value,
           'intra_op_threads': _INTRA.value, 'malloc_arenas': _ARENAS.value}
  try:  # a flag not given keeps WorkerConfig's default
    config = execution.WorkerConfig(**{name: value for name, value in given.items()
                                       if value is not None})
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  argv, env = execution.worker_command(_PORT.value, config)
  print(f'TFF worker on port {_PORT.value}: {" ".join(argv[1:])}', file=sys.stderr, flush=True)
  os.execve(argv[0], argv, env)


if __name__ == '__main__':
  app.run(main)
