"""Pruning: structured (whole neurons / filters ranked, masked, then removed physically) or fine-grained
(single weights masked to exactly zero, ``prune.granularity: weight``).

The package, one module per concern (docs/pruning.md describes the method and the figures):

* :mod:`.common`: the model's weight layers and their statistics, accuracy, the shared parts of the
  ``random`` / ``taylor`` criteria, fine-tuning, schedules;
* :mod:`.units`: unit criteria, coupled groups, :func:`select_units`, masking and physical removal of
  whole neurons / filters;
* :mod:`.slimming`: network slimming (``bn_gamma``) on a BatchNorm twin, folded back;
* :mod:`.weights`: per-weight masks and criteria, :func:`select_weights`, :class:`WeightMaskGuard`;
* :mod:`.budget`: budget mode: unit / weight costs, the greedy budget selection, the budget meter, the
  energy estimate of a model;
* :mod:`.energy_aware`: the energy-aware schedule of Yang, Chen, Sze (CVPR 2017);
* :mod:`.report`: the per-layer rows and the summary of ``prune.json``, for every driver;
* :mod:`.stage`: :func:`prune_model` (the driver) and :func:`run_stage` (the flow stage).

Every name below is importable as ``codesign.prune.<name>``, as it was from the single module.
"""

from codesign.prune.budget import unit_param_costs
from codesign.prune.common import (
    CostFn,
    LayerStat,
    accuracy,
    finetune,
    layer_stats,
    outputs,
    prunable_layers,
    schedule_targets,
)
from codesign.prune.energy_aware import energy_aware_prune, val_metrics
from codesign.prune.slimming import slimming_train
from codesign.prune.stage import prune_model, run_stage
from codesign.prune.units import (
    apply_mask,
    consumers,
    coupled_groups,
    importance,
    prune_once,
    pruned_config,
    remove_units,
    select_units,
    taylor_scores,
)
from codesign.prune.weights import (
    Masks,
    WeightMaskGuard,
    apply_weight_masks,
    finetune_masked,
    masked_nonzero_codes,
    select_weights,
    taylor_weight_scores,
    weight_codes,
    weight_importance,
    weight_masks,
)

__all__ = [
    "CostFn", "LayerStat", "Masks", "WeightMaskGuard", "accuracy", "apply_mask", "apply_weight_masks",
    "consumers", "coupled_groups", "energy_aware_prune", "finetune", "finetune_masked", "importance",
    "layer_stats", "masked_nonzero_codes", "outputs", "prunable_layers", "prune_model", "prune_once",
    "pruned_config", "remove_units", "run_stage", "schedule_targets", "select_units", "select_weights",
    "slimming_train", "taylor_scores", "taylor_weight_scores", "unit_param_costs", "val_metrics",
    "weight_codes", "weight_importance", "weight_masks",
]
