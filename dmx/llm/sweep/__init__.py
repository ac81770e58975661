"""One sweep over methods and bit budgets: full precision, uniform MX, KL heuristic and dMX.

The package holds no code of its own: :mod:`dmx.llm.sweep.config` (``SweepConfig``, methods, point
labels, the checks before loading), :mod:`dmx.llm.sweep.run` (``run_sweep``),
:mod:`dmx.llm.sweep.results` (``ResultStore``, CSV and summary) and :mod:`dmx.llm.sweep.figures`.

``run_sweep(SweepConfig(...))`` evaluates, on one model:

- ``fp``: the unquantised model;
- ``uniform``: every quantised layer at one standard MX format (``SweepConfig.plan.uniform``);
- ``kl``: the KL layer-selection heuristic (``dmx.llm.kl_baseline``) at every target;
- ``dmx``: the differentiable assignment (``dmx.calibrate``) at every target;
- ``random``: the control, seeded random assignments filling each target exactly
  (``dmx.llm.random_baseline``);

``plan.seeds`` > 1 repeats the seeded methods (``kl``: the draw of its calibration windows, scored
and cached separately; ``dmx``: calibration windows and their order; ``random``: the draw) for seeds ``seed, seed+1, ...``; the first seed keeps the plain label
(``dmx@5``), the i-th extra one gets ``:s<i>`` (``dmx@5:s1`` is seed ``seed+1``). ``summarize_points`` reduces the seeds of
one (method, target) to mean, standard deviation, min and max (``summary.csv``; the Pareto plot
draws the mean with the min-max range).

and measures WikiText-2 perplexity (``dmx.llm.perplexity``, GPTQ protocol; ``evaluation.first_window`` skips
windows, ``evaluation.max_windows`` limits their count; every new point stores its per-window NLLs, so two
methods can be compared window by window) and, when ``evaluation.tasks`` is given, zero-shot accuracy (``dmx.llm.zeroshot``).

Outputs in ``out_dir`` (all written atomically after every finished point, so an interrupted
sweep, Ctrl-C or SIGTERM, keeps what it has and a rerun skips finished points; ``results.json``
keeps its version before the last point as ``results.json.prev``, used when it is corrupt):

- ``results.json``: ``{"schema": "dmx.sweep/1", "config": {...}, "points": [point, ...]}``;
  a point is ``{"key", "method", "label", "target", "format", "avg_bits", "storage_bits",
  "perplexity", "window_nlls": [nll, ...], "first_window", "accuracy": {task: acc}, "avg_accuracy",
  "seconds", "formats": {layer: fmt}}`` (points measured before per-window NLLs were stored lack
  ``window_nlls`` and ``first_window``); with zero-shot tasks also ``accuracy_settings``,
  ``accuracy_documents`` (0/1 per question) and ``accuracy_seconds`` (``seconds`` is the
  calibration and perplexity);
- ``results.csv``: the same points, one row each, without the per-layer formats;
- ``summary.csv``: one row per (method, target or format) over its seeds (``summarize_points``);
- ``assignments/<label>.json``: the ``dmx.assignment.Assignment`` of every KL / dMX point;
- ``pareto.png`` and ``assignment_heatmap.png`` (``dmx.llm.plots``);
- ``kl_cache/``: the KL per-layer score cache; ``checkpoints/<label>-<settings hash>/``: dMX calibration
  checkpoints (a rerun resumes an interrupted calibration); ``zeroshot_checkpoints/<label>-<hash>.json``:
  the zero-shot tasks a point has finished while it answers (a point is stored with its perplexity
  first, so a rerun resumes at the task that was interrupted; the file goes once the point has
  its accuracy).

Rotations (``SweepConfig.model.rotation``, a :class:`dmx.llm.rotation.RotationSpec`): the model is
rotated right after loading, so full precision, uniform, KL and dMX are all measured on the same
rotated model and compare fairly.
``learned``: the fp, uniform and KL points use the fixed starting point of the learned kind (the
folded randomized Hadamard, QuaRot layout, same seed), and each dMX point learns its own rotation
jointly with its offsets on a freshly loaded copy of the model (Cayley SGD, lr
``calibration.rotation_lr``, default 1.5), baked before evaluation and saved as
``assignments/<label>.rotation.safetensors``. Every assignment records its rotation.
"""
