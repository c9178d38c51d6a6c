"""``kdsearch run``: teacher -> search -> distil -> compare -> show, in one run directory.

A pipeline config (a YAML file, or the same mapping given to :func:`run_pipeline`)::

    dataset: digits                      # or {name: digits, data_dir: DIR, subset: 500}
                                         # (input_size: [3, 64, 64] for imagefolder)
    teacher:
      model: digits_resnet14             # zoo name or torchvision:NAME
      weights: teacher.pt                # optional: load these instead of training
      train: {epochs: 15, lr: 0.05}      # the teacher's cross-entropy training
    search:
      budgets: [0.5x, "like:digits_resnet8"]
      preset: digits                     # default: the teacher's family
      steps: 150                         # any search setting (SearchConfig)
      constraints: {min_channels: 2}     # any constraint (Constraints)
    distill:
      method: kd                         # or stages: FILE or an inline list of stages
      options: {temperature: 4}
      epochs: 15                         # and lr, batch_size, ... (as in a stages file)
      init: fresh                        # fresh: from scratch; search: the search's weights
    compare: {against: [digits_resnet8], seeds: 2, epochs: 15}   # optional
    show: true                           # figures of the run directory
    seed: 0
    device: auto
    out: runs/pipeline

``teacher.train`` takes the settings of a stages file (epochs, lr, batch_size, momentum,
weight_decay, nesterov, lr_milestones, lr_decay) and is unused when ``weights`` are given.
``compare`` takes the :class:`~kdsearch.compare.Comparison` settings besides the teacher,
data and device (which are the pipeline's); its method, epochs, lr, batch size, preset,
search steps and first seed default to the pipeline's. ``device`` applies to every step.
Input files (``teacher.weights``, ``distill.stages``, a preset path) are relative to the
config file; ``out`` is relative to the current directory. :func:`parse_config` checks a
config into a :class:`PipelineConfig` (typed sections; ``check_config``: the same as the
JSON-ready mapping that ``config.json`` holds). The run directory::

    config.json        the checked config, defaults filled in
    teacher/           the teacher's training (teacher.pt), or evaluation.json when loaded
    search/TAG/        one search per budget (TAG: the budget, ':' -> '_')
    distill/TAG/       that student's distillation (stage1_kd/, summary.json, student.pt)
    compare/           kdsearch compare's output (comparison.csv, comparison.md, plots)
    figures/           kdsearch show's figures
    results.json/.md   teacher and students: MACs, params, test accuracy

A step is skipped when its outputs exist, so a re-run continues where the last one
stopped (the figures are redrawn when another step ran). Each step folder records its
inputs (``inputs.json``); a folder holding a step made with other settings is an error
naming the first difference (nothing is overwritten).
"""

from kdsearch.pipeline.config import PipelineConfig, check_config, load_config, parse_config
from kdsearch.pipeline.report import results_table, write_report
from kdsearch.pipeline.run import PipelineRun, run_pipeline, train_teacher

__all__ = [
    "PipelineConfig",
    "PipelineRun",
    "check_config",
    "load_config",
    "parse_config",
    "results_table",
    "run_pipeline",
    "train_teacher",
    "write_report",
]
