"""The validated hyperparameters of every algorithm: the one place they live.

Learning rate, weight decay and initialisation scale chosen together on the validation NDCG@10 of ML-100k (paper
protocol, 100 clients, d = 512, seed 0): learning rates from the paper's grid {0.01, 0.001, 0.0001},
weight decays from {0, 1e-6, 1e-3} (searched since `launchers.experiments --grid`; 0 until then),
scales from {0.1, 0.035, 0.01, 0.003}. README "Choosing the defaults" has the numbers; mf_local was
only tried at scale 0.1. fedncf, pfedrec, fedrap, gpfedrec, fedcia, fedalphafuse, fedrlm_con and
fedrlm_gen have not been through the grid yet: they start from FedMF's values. `launchers.simulate` uses these when `--learning_rate`,
`--weight_decay` or `--init_scale` is not given and records the effective values in `flags.json`; the experiment runner
(`launchers.experiments`) passes them explicitly, so a changed default is a different cell.
"""

from __future__ import annotations

# The paper's grid (Sec. 6.1), searched per method on validation by `launchers.experiments --grid`.
LEARNING_RATE_GRID = (0.01, 0.001, 0.0001)
WEIGHT_DECAY_GRID = (0.0, 1e-6, 1e-3)

DEFAULT_LEARNING_RATE = {'fedmf': 0.01, 'fedncf': 0.01, 'mf_local': 0.01, 'pfedrec': 0.01, 'fedrap': 0.01,
                         'gpfedrec': 0.01, 'fedcia': 0.01, 'fedalphafuse': 0.01, 'fedrlm_con': 0.01,
                         'fedrlm_gen': 0.01, 'rqfedrec': 0.01}
DEFAULT_INIT_SCALE = {'fedmf': 0.01, 'fedncf': 0.01, 'mf_local': 0.1, 'pfedrec': 0.01, 'fedrap': 0.01,
                      'gpfedrec': 0.01, 'fedcia': 0.01, 'fedalphafuse': 0.01, 'fedrlm_con': 0.01,
                      'fedrlm_gen': 0.01, 'rqfedrec': 0.01}
DEFAULT_WEIGHT_DECAY = {name: 0.0 for name in DEFAULT_LEARNING_RATE}
