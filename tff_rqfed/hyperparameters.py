"""The validated hyperparameters of every algorithm: the one place they live.

FedMF, RQFedRec, PFedRec, FedRAP, FedNCF, GPFedRec and FedAlphaFuse: learning rate and weight decay
chosen on the validation NDCG@10 of ML-100k (paper protocol, 100 clients, d = 512, seed 0) over the
paper's grid, lr {0.01, 0.001, 0.0001} x weight decay {0, 1e-6, 1e-3} (`launchers.experiments --grid`);
the first three choose lr 0.001, wd 1e-6, FedRAP lr 0.01, wd 1e-3 (still below MostPop on test; lr
0.001, wd 1e-3 until its lr-0.01 cell was rerun under the early-stop floor below, which let it climb
from 0.1085 to 0.1162 against 0.1156), FedNCF lr 0.001, wd 0, GPFedRec lr 0.01, wd 1e-6 (at lr
0.001 and below it stalls near the popularity level), FedAlphaFuse lr 0.01, wd 1e-6 (at lr 0.001 its
validation dips from round 6 to about 40 and climbs again only slowly: run to the 300-round cap it
stays below lr 0.01).
The initialisation scale was chosen before, from {0.1, 0.035, 0.01, 0.003} at lr 0.01.
docs/RESULTS.md "The validation grid" and "Choosing the defaults" have the numbers.

fedcia, fedrlm_con and fedrlm_gen have not been through the grid yet
(docs/RESULTS.md "The validation grid"): they keep the values FedMF had before its grid (lr 0.01,
wd 0, scale 0.01), at which their tables were run; mf_local was only tried at scale 0.1.

`launchers.simulate` uses these when `--learning_rate`, `--weight_decay` or `--init_scale` is not
given and records the effective values in `flags.json`; the experiment runner (`launchers.experiments`)
passes them explicitly, so a changed default is a different cell.

Early stopping (the paper gives no rule; ours): stop once validation NDCG@10 has not improved for
`--patience` rounds, counted only after `min_rounds`. RQFedRec's floor is its schedule's, T_warm + tau
(30 at the defaults; `launchers.simulate`), because its validation dips while Eq. 10 moves weight to
the collaborative channel. In the `validated` set the other methods the grid chose for (FedMF,
PFedRec, FedRAP, FedNCF, GPFedRec) have the same floor of 30 (`DEFAULT_MIN_ROUNDS`): at lr 0.001 FedMF
sits on a popularity plateau for its first 4-16 rounds, which patience 10 alone can end (Table 7's
noise-0.05 cell stopped at round 16, below MostPop; docs/RESULTS.md "Table 7"). A floor only changes
runs whose best round came before it. FedAlphaFuse, FedRLM_con and FedRLM_gen (FedMF with a
frozen language part or a text-alignment term) have the floor in the `validated` set from their grid
on, so their grid's cells stop under the rule their chosen values run with. FedCIA and local MF keep
their pre-grid values, floor 0 included, in both sets. When a share f of the clients takes part in
each round, the experiment runner counts the rule in passes over the clients (`stopping_in_passes`:
patience, floor, round cap and validation interval times 1/f).

A row of a table whose setting differs from the one the grid chose in (the budget analysis's smaller
d and M; Table 3's one user per client) has its learning rate chosen on its own validation, over the
same learning rates at the weight decay chosen at d = 512 with 100 clients (`ROW_CHOICES`,
`row_choice`; `launchers.experiments --grid --analysis=budget` or `--grid --table=3`): the lr 0.001
chosen there left five of the eight smaller-d rows (FedMF d 32 and 64, RQFedRec d 32 to 128) and
Table 3's PFedRec, FedMF and RQFedRec on the popularity plateau.

Two named sets (`SETS`, `defaults`): `validated`, the values above, and `pre_grid`, the values every
algorithm had before the grid (lr 0.01, weight decay 0, the same initialisation scales, no floor but
RQFedRec's). Most ML-100k tables of docs/RESULTS.md ran their FedMF and RQFedRec cells at `pre_grid`;
`launchers.experiments --hyperparameters=pre_grid` regenerates them at any later commit.
"""

from __future__ import annotations

# The paper's grid (Sec. 6.1), searched per method on validation by `launchers.experiments --grid`.
LEARNING_RATE_GRID = (0.01, 0.001, 0.0001)
WEIGHT_DECAY_GRID = (0.0, 1e-6, 1e-3)

DEFAULT_LEARNING_RATE = {'fedmf': 0.001, 'fedncf': 0.001, 'mf_local': 0.01, 'pfedrec': 0.001, 'fedrap': 0.01,
                         'gpfedrec': 0.01, 'fedcia': 0.01, 'fedalphafuse': 0.01, 'fedrlm_con': 0.01,
                         'fedrlm_gen': 0.01, 'rqfedrec': 0.001}
DEFAULT_INIT_SCALE = {'fedmf': 0.01, 'fedncf': 0.01, 'mf_local': 0.1, 'pfedrec': 0.01, 'fedrap': 0.01,
                      'gpfedrec': 0.01, 'fedcia': 0.01, 'fedalphafuse': 0.01, 'fedrlm_con': 0.01,
                      'fedrlm_gen': 0.01, 'rqfedrec': 0.01}
DEFAULT_WEIGHT_DECAY = {name: 0.0 for name in DEFAULT_LEARNING_RATE} | {
    'fedmf': 1e-6, 'rqfedrec': 1e-6, 'pfedrec': 1e-6, 'fedrap': 1e-3, 'gpfedrec': 1e-6, 'fedalphafuse': 1e-6}

# Before the grid every trainable algorithm ran at lr 0.01 and weight decay 0 (commit b47da37 and
# earlier); the initialisation scales were already chosen (at lr 0.01) and are the same in both sets.
PRE_GRID_LEARNING_RATE = {name: 0.01 for name in DEFAULT_LEARNING_RATE}
PRE_GRID_WEIGHT_DECAY = {name: 0.0 for name in DEFAULT_LEARNING_RATE}

# The early-stop floor (module doc, `early_stop_floor`). RQFedRec is absent from both: its floor is
# T_warm + tau of its own flags, so an ablation that changes tau changes it.
VALIDATED_MIN_ROUNDS = 30
# The grid chose for the first five (and RQFedRec); the Table 5 methods (FedMF plus text) have the floor
# from their grid on, so their grid cells stop under the same rule as the chosen values will.
FLOORED = ('fedmf', 'pfedrec', 'fedrap', 'fedncf', 'gpfedrec', 'fedalphafuse', 'fedrlm_con', 'fedrlm_gen')
PRE_GRID_MIN_ROUNDS = {name: 0 for name in DEFAULT_LEARNING_RATE if name != 'rqfedrec'}
DEFAULT_MIN_ROUNDS = PRE_GRID_MIN_ROUNDS | {name: VALIDATED_MIN_ROUNDS for name in FLOORED}

# The rest of the stopping rule (`launchers.simulate`'s --patience and --rounds defaults), and
# RQFedRec's T_warm and tau (`algorithms.rqfedrec.RQConfig`'s defaults, its floor 30), here so that the
# experiment runner can scale the rule without importing the algorithm (and TFF).
PATIENCE = 10
MAX_ROUNDS = 300
RQFEDREC_WARMUP_ROUNDS = 20
RQFEDREC_REFRESH_EVERY = 10

# Rows of a target whose setting differs from the grid's (d = 512, 100 clients): the budget's smaller d
# and M, Table 3's one user per client. Their learning rate chosen on their own validation NDCG@10 (seed
# 0) over the paper's learning rates at the weight decay chosen at d = 512 (`launchers.experiments
# --grid --analysis=budget --methods=<stems> --weight_decays=1e-6`, `chosen-budget.json`; `--grid
# --table=3`, `chosen-table3.json`); target -> row stem -> values. The `validated` set only:
# `pre_grid` runs every row at its algorithm's pre-grid values.
# Every smaller d chose lr 0.01 for both methods (seed 0, validation NDCG@10 0.194-0.206; at lr
# 0.001 0.090-0.110 where the row stops on the popularity plateau, 0.190-0.205 at FedMF's d 128 and
# both d 256; 0.090-0.110 at lr 0.0001); RQFedRec's fewer codes per level at d = 512 chose lr 0.01
# at M 16 and 32 and lr 0.001 at M 64 and 128, as at M 256. docs/RESULTS.md "Budget".
ROW_CHOICES: dict[str, dict[str, dict[str, float]]] = {
    'budget': {f'{method}-d{d}': {'learning_rate': 0.01, 'weight_decay': 1e-6}
               for method in ('fedmf', 'rqfedrec') for d in (32, 64, 128, 256)} | {
        'rqfedrec-m16': {'learning_rate': 0.01, 'weight_decay': 1e-6},
        'rqfedrec-m32': {'learning_rate': 0.01, 'weight_decay': 1e-6},
        'rqfedrec-m64': {'learning_rate': 0.001, 'weight_decay': 1e-6},
        'rqfedrec-m128': {'learning_rate': 0.001, 'weight_decay': 1e-6}},
    # Table 3, one user per client (943 clients): at lr 0.001 PFedRec, FedMF and RQFedRec stop on the
    # popularity plateau (validation 0.118, 0.112, 0.096). PFedRec chose lr 0.01 (0.2121; lr 0.0001
    # 0.1087 after 272 rounds), FedMF lr 0.01 (0.2061; lr 0.0001 0.1075 after 230 rounds), RQFedRec lr
    # 0.01 (0.1563; lr 0.0001 0.0757 after 129 rounds). GPFedRec and FedRAP (32-63 s a round here) were
    # not searched. docs/RESULTS.md "Table 3".
    'table3': {'pfedrec': {'learning_rate': 0.01, 'weight_decay': 1e-6},
               'fedmf': {'learning_rate': 0.01, 'weight_decay': 1e-6},
               'rqfedrec': {'learning_rate': 0.01, 'weight_decay': 1e-6}},
}

SETS = {'validated': (DEFAULT_LEARNING_RATE, DEFAULT_WEIGHT_DECAY, DEFAULT_MIN_ROUNDS),
        'pre_grid': (PRE_GRID_LEARNING_RATE, PRE_GRID_WEIGHT_DECAY, PRE_GRID_MIN_ROUNDS)}


def _named_set(hyperparameter_set: str) -> tuple[dict, dict, dict]:
  """`(learning_rates, weight_decays, min_rounds)` of the named set; ValueError quoting an unknown name."""
  if hyperparameter_set not in SETS:
    raise ValueError(f'hyperparameter set {hyperparameter_set!r} is unknown; known: {sorted(SETS)}')
  return SETS[hyperparameter_set]


def defaults(algorithm: str, hyperparameter_set: str = 'validated') -> dict[str, float]:
  """`{'learning_rate', 'weight_decay', 'init_scale', 'min_rounds'}` of `algorithm` in the named set
  (`SETS`); without `min_rounds` for RQFedRec, whose floor follows its own T_warm and tau."""
  learning_rates, weight_decays, min_rounds = _named_set(hyperparameter_set)
  if algorithm not in DEFAULT_LEARNING_RATE:
    raise ValueError(f'{algorithm!r} has no hyperparameters; trainable algorithms: '
                     f'{sorted(DEFAULT_LEARNING_RATE)}')
  values = {'learning_rate': learning_rates[algorithm], 'weight_decay': weight_decays[algorithm],
            'init_scale': DEFAULT_INIT_SCALE[algorithm]}
  if algorithm in min_rounds:
    values['min_rounds'] = min_rounds[algorithm]
  return values


def row_choice(target: str, stem: str, hyperparameter_set: str = 'validated') -> dict[str, float]:
  """The learning rate and weight decay chosen for row `stem` of `target` (`ROW_CHOICES`), which
  replace its algorithm's in the `validated` set; `{}` for every other row and set."""
  _named_set(hyperparameter_set)
  return dict(ROW_CHOICES.get(target, {}).get(stem, {})) if hyperparameter_set == 'validated' else {}


def early_stop_floor(algorithm: str, *, warmup_rounds: int, refresh_every: int,
                     hyperparameter_set: str = 'validated') -> int:
  """The round after which patience counts: T_warm + tau for RQFedRec (its validation dips while
  Eq. 10 warms up), else the named set's floor (0 for an algorithm without one, such as MostPop)."""
  _, _, min_rounds = _named_set(hyperparameter_set)
  if algorithm == 'rqfedrec':
    return warmup_rounds + refresh_every
  return min_rounds.get(algorithm, 0)


def stopping_in_passes(client_fraction: float, *, min_rounds: int, patience: int = PATIENCE,
                       rounds: int = MAX_ROUNDS) -> dict[str, int]:
  """`{'patience', 'min_rounds', 'rounds', 'eval_every'}` for a run that samples `client_fraction` f of
  the clients in each round: the full-participation rule, counted in passes over the clients.

  A client takes part once every 1/f rounds on average, so patience 10 at f = 0.1 would end a run
  after one visit per client without improvement, and the floor of 30 (set for the popularity
  plateau of the first 4-20 full rounds at lr 0.001) after three. Patience, floor and round cap are
  multiplied by 1/f and rounded, and validation runs once a pass (every 1/f rounds, rounded) instead
  of every round, so a run validates as often per pass as a full one does (at f = 0.1 FedMF trained
  a round in 0.23 s and took 0.62 s with its validation and checkpoints). Measured without it
  (docs/RESULTS.md "Sparse participation"): FedMF at f = 0.1, lr 0.001, stopped at rounds 50 and 62
  on the popularity plateau (recall@10 0.083, below MostPop's 0.0975) and ran into the 300-round cap
  on the third seed, its best at round 299.
  """
  if not 0.0 < client_fraction <= 1.0:
    raise ValueError(f'client_fraction must be in (0, 1], got {client_fraction!r}')
  return {'patience': round(patience / client_fraction), 'min_rounds': round(min_rounds / client_fraction),
          'rounds': round(rounds / client_fraction), 'eval_every': round(1 / client_fraction)}
