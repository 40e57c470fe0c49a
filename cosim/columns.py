"""The column reference of the results: every column of every table a run and a sweep write,
every key of ``summary.json``, each with its unit, and every value a categorical column takes.

docs/columns.md is :func:`page` (generated, as docs/comparisons.md's sweep keys are
:func:`cosim.sweep.keys_table`; tests/test_docs.py keeps it current and fails on a column, a key
or a value that has no line here). The columns come in the order and under the names where cosim
declares them — the recorder's schemas (:data:`cosim.recorder.COVERAGE_SCHEMA`,
:data:`~cosim.recorder.RSUS_SCHEMA`), DViT's :attr:`~cosim.layers.dvit.layer.DViTLayer.COLUMNS`,
the cache's :data:`~cosim.layers.cache.layer.OUTCOMES` — and this module gives each its line:
``name: (unit, meaning)``; a unit ``–`` is a count, a flag, a name or a number without unit.

Regenerate the page after editing a line here::

    python -c "from cosim.columns import page; print(page(), end='')" > docs/columns.md
"""

from __future__ import annotations

#: the unit of a dimensionless number, a count, a flag or a name
NONE = "–"

#: what joins the tables: the RSU of a row is its id (``rsu0``, ``north``…) everywhere but in
#: ``dvit_tasks``, whose ``rsu`` and ``final_rsu`` are positions in ``summary.json["rsus"]``
RSU_INDEX = ("index (0-based) into `summary.json[\"rsus\"]`, not an RSU id: the RSU's id is "
             "`summary.json[\"rsus\"][i][\"id\"]`, what `coverage.rsu`, `rsus.rsu` and `cache_requests.rsu` hold; "
             "map it before joining (`ids = [r[\"id\"] for r in summary[\"rsus\"]]`, `tasks[\"rsu\"].map(dict(enumerate(ids)))`)")

# -- the run's tables --------------------------------------------------------------------------
COVERAGE = {
    "slot": (NONE, "the slot (0 = the first slot of the run)"),
    "time_s": ("s", "simulation time of the slot's snapshot"),
    "vehicle": (NONE, "SUMO vehicle id"),
    "x": ("m", "position, SUMO's network coordinates"),
    "y": ("m", "position, SUMO's network coordinates"),
    "speed_mps": ("m/s", "speed"),
    "cell": (NONE, "road-grid cell (`world.grid_cell_m` long along its edge); -1 off the network"),
    "rsu": (NONE, "id of the serving RSU; null when no RSU covers the vehicle"),
    "dwell_s": ("s", "predicted remaining time in the serving RSU's coverage (`world.dwell_model`; capped at "
                     "`world.dwell_cap_s`; docs/dwell.md)"),
    "rate_v2i_bps": ("bit/s", "eq. (3) uplink rate to the serving RSU this slot (SUMO's distance); 0 without RSU"),
}
RSUS = {
    "slot": (NONE, "the slot"),
    "time_s": ("s", "simulation time of the slot's snapshot"),
    "rsu": (NONE, "RSU id (as `summary.json[\"rsus\"][i][\"id\"]`)"),
    "connected": (NONE, "vehicles it serves this slot"),
    "handover_in": (NONE, "vehicles served here now and by another RSU in the previous slot"),
    "handover_out": (NONE, "vehicles served here in the previous slot and by another RSU now"),
    "joined": (NONE, "vehicles served here now that were in no coverage, or new, in the previous slot"),
    "left": (NONE, "vehicles served here in the previous slot that are now out of every coverage or left the "
                   "simulation"),
}
DVIT_TASKS = {
    "task": (NONE, "task id (the same task, one row per policy)"),
    "policy": (NONE, "the scheduler"),
    "t_request_s": ("s", "request time"),
    "user": (NONE, "SUMO id of the requesting vehicle"),
    "rsu": (NONE, "the RSU the task was requested at: " + RSU_INDEX),
    "steps": (NONE, "denoising steps K"),
    "devices": (NONE, "the device of every step run: `rsu` or a vehicle id"),
    "comm_s": ("s", "sum of the steps' hand-off (communication) times"),
    "comp_s": ("s", "sum of the steps' computation times"),
    "queue_s": ("s", "sum of the steps' queueing times"),
    "step_comm_s": ("s", "hand-off time of every step run"),
    "step_comp_s": ("s", "computation time of every step run"),
    "step_queue_s": ("s", "queueing time of every step run"),
    "planned_latency_s": ("s", "the plan's latency at request time (`problem.evaluate`: upload + its steps); NaN "
                               "without a plan"),
    "planned_feasible": (NONE, "the plan met C1/C2, the local steps, every link, C3 and C4 at request time "
                               "(`cosim.layers.dvit.problem.evaluate`; its first violated constraint — C1/C2, "
                               "local-steps, no-link, C3, C4 — is not stored); false without a plan"),
    "latency_s": ("s", "request to last step done (upload, every step, migrations); NaN unless all steps ran"),
    "reschedules": (NONE, "re-plans of the remaining steps (a helper left, a step would break T_max, a migration)"),
    "migrations": (NONE, "RSU handovers of the user the task followed (`handover = \"migrate\"`)"),
    "migrate_s": ("s", "backhaul time of those migrations"),
    "final_rsu": (NONE, "the RSU serving the task at its end (after migrations): " + RSU_INDEX),
    "replans": (NONE, "closed-loop re-decisions (`replan = \"every-step\"` / `\"step\"` schedulers)"),
    "success": (NONE, "outcome is `done`"),
    "failure": (NONE, "why the task failed (values below); empty when done"),
    "outcome": (NONE, "done, failed or censored (values below)"),
}
CACHE_REQUESTS = {
    "policy": (NONE, "the eviction policy"),
    "t_s": ("s", "request time (a preload row: when the preload started)"),
    "vehicle": (NONE, "SUMO id of the requesting vehicle; null on a preload row"),
    "rsu": (NONE, "id of the RSU the request went to (a preload row: the RSU that preloads)"),
    "delivered_by": (NONE, "id of the RSU that delivered the response (another one if the vehicle handed over "
                           "while its request was queued); null when lost, for an outage and on a preload row"),
    "model": (NONE, "the model asked for (or preloaded)"),
    "service": (NONE, "the service asked for; null on a preload row"),
    "outcome": (NONE, "how the request was served (values below)"),
    "edge": (NONE, "served at the edge: outcome `hit` or `load-wait`"),
    "evicted": (NONE, "models evicted to make room for this load, comma-separated; empty if none"),
    "examples": (NONE, "examples in the RSU's context for the service (Age of Context), K; 0 off the edge"),
    "accuracy": ("%", "accuracy a(K) of the response (the cloud: the full-window accuracy); NaN for an outage and a preload"),
    "switching_cost": ("s × weight", "model-load time charged to this request (Table II's switching), times the "
                                     "`costs` preset's weight"),
    "accuracy_cost": ("fraction × weight", "(a_best - a(K)) / 100, times its weight"),
    "inference_latency_s": ("s × weight", "GPU queue wait (+ load wait) + computation at the edge, times its weight"),
    "offloading_latency_s": ("s × weight", "upload + download radio time (an outage: `transfer_timeout_s`), times "
                                           "its weight"),
    "cloud_cost": ("s × weight", "transfer + `cloud_latency_s` + cloud computation + `cloud_fee`, times its weight; "
                                 "0 at the edge"),
    "system_cost": ("s × weight", "switching + accuracy + inference + offloading + cloud cost"),
}
MOE_TASKS = {
    "task": (NONE, "task id (the same task, one row per policy)"),
    "policy": (NONE, "the pricing solver"),
    "t_request_s": ("s", "request time"),
    "tv": (NONE, "SUMO id of the task vehicle (TV)"),
    "ivs": (NONE, "the infrastructure vehicles (IVs) offered the task: player j of the game is `ivs[j]`"),
    "layer_ivs": (NONE, "per MoE layer, the IVs its experts ran on, `|`-separated (a subset of `ivs`)"),
    "tokens_per_expert": (NONE, "tokens routed to each expert, layer by layer (moe_layers × experts, row-major)"),
    "prices": ("game units", "the unit price each IV of `ivs` posted"),
    "compute_tflops": ("TFLOP/s", "the compute the TV bought from each IV of `ivs`"),
    "layer_comm_s": ("s", "per layer: token upload + download time of its slowest IV"),
    "layer_comp_s": ("s", "per layer: expert computation time of its slowest IV"),
    "layer_mem_s": ("s", "per layer: loading its experts' weights from memory, slowest IV"),
    "layer_tv_s": ("s", "per layer: the TV's own compute (attention + gate)"),
    "layer_move_s": ("s", "per layer: weights moved to new hosts before it (reroutes, `placement = \"load\"`)"),
    "latency_s": ("s", "request to last layer done; NaN unless every layer ran"),
    "iv_utility": ("game units", "mean utility over the IVs offered a price (NaN if none was)"),
    "tv_utility": ("game units", "the TV's utility at its best response"),
    "nash_gap": ("game units", "max over the IVs of (best deviation utility - utility) at the posted prices; 0 at "
                               "an equilibrium"),
    "eq_distance": (NONE, "max_i |p_i - p*_i| / p*_i against the exact equilibrium; NaN where it is undefined"),
    "solve_ms": ("ms", "CPU time the solver took for the prices"),
    "solver_evals": (NONE, "follower evaluations the solver spent"),
    "reroutes": (NONE, "reroutes (an IV a layer needs left V2V range)"),
    "moved_experts": (NONE, "experts whose weights were moved to another IV"),
    "success": (NONE, "outcome is `done`"),
    "failure": (NONE, "why the task failed (values below); empty when done"),
    "outcome": (NONE, "done, failed or censored (values below)"),
}

#: every categorical column's values: (table, column) -> value -> meaning
VALUES = {
    ("cache_requests", "outcome"): {
        "hit": "the model was cached and loaded and the GPU queue short enough: served at the edge",
        "miss": "the model was not cached: it is loaded (switching cost, evictions) and the request goes to the "
                "cloud (`miss = \"cloud\"`; with `miss = \"wait\"`: the load takes longer than `miss_wait_max_s`)",
        "miss-no-room": "not cached, and no room is made for it: larger than the GPU memory, the models that "
                        "would have to go are still loading, or (`lc-predictive`) they are worth more than its "
                        "predicted demand: the cloud, no load, nothing evicted",
        "miss-rejected": "not cached, and `lc-predictive`'s admission control declined it (its predicted demand "
                         "does not pay for its load time): the cloud, no load, nothing evicted",
        "loading": "cached but still loading (and, with `miss = \"wait\"`, not ready within `miss_wait_max_s`): "
                   "the cloud",
        "busy": "the model was ready but the RSU's GPU queue was over `max_queue_s`: the cloud",
        "cloud": "the `cloud` policy: every request to the cloud",
        "preload": "not a request: a model preloaded (`lc-predictive`) — `vehicle` and `service` null, its "
                   "switching cost and evictions charged here",
        "outage": "the radio transfer at this slot's rates would exceed `transfer_timeout_s`: lost for every policy "
                  "alike, the timeout charged as offloading latency",
        "load-wait": "`miss = \"wait\"`: the request waited for its model's load (within `miss_wait_max_s`), then "
                     "ran at the edge",
    },
    ("dvit_tasks", "outcome"): {
        "done": "every step ran and none broke T_max (C3)",
        "failed": "the task ended without success (`failure` says why)",
        "censored": "still running when the run ended: neither success nor failure (left out of `success_rate`)",
    },
    ("dvit_tasks", "failure"): {
        "": "done (no failure)",
        "infeasible": "the scheduler found no admissible plan at request time (returned None)",
        "no-uplink": "the request's upload cannot reach the RSU (no link)",
        "user-vanished": "the requesting vehicle left the simulation",
        "device-lost": "the vehicle holding the latent left the simulation (or a planned helper did and no re-plan "
                       "could replace it)",
        "no-link": "a step's hand-off has no link (infinite time)",
        "C3": "every step ran, but some step took longer than T_max (`t_max_s`); `latency_s` is kept",
        "C4": "the user was out of the RSU's coverage when the last steps moved to it",
        "reschedule-infeasible": "a re-plan (helper lost, T_max, migration) found no admissible plan",
        "policy-error": "the scheduler raised or returned an inadmissible plan; the layer dropped it (summary "
                        "`error`)",
        "censored": "outcome censored (still running at the end)",
    },
    ("moe_tasks", "outcome"): {
        "done": "every MoE layer ran within `deadline_s`",
        "failed": "the task ended without success (`failure` says why)",
        "censored": "still running when the run ended, within its deadline: neither success nor failure",
    },
    ("moe_tasks", "failure"): {
        "": "done (no failure)",
        "no-ivs": "no infrastructure vehicle within V2V range could host an expert",
        "priced-out": "the TV bought no compute at the posted prices (summary `declined`)",
        "tv-vanished": "the task vehicle left the simulation",
        "no-link": "a V2V rate of 0 to an IV a layer needs",
        "iv-left-range": "no IV the TV bought compute from is still reachable",
        "deadline": "the task ended (or was still running at the end) later than `deadline_s`",
        "policy-error": "the solver raised or returned bad prices; the layer dropped it (summary `error`)",
        "censored": "outcome censored (still running at the end, within its deadline)",
    },
    ("summary.json", "status"): {
        "completed": "ran to the end",
        "failed": "a layer or cosim failed mid-run (`error` says what); results up to the last slot kept",
        "interrupted": "Ctrl-C; results up to the last slot kept",
        "terminated": "SIGTERM; results up to the last slot kept",
        "sumo-died": "SUMO ended or crashed mid-run",
        "bad-input": "bad input met after the first slot (a trace row, a plugin's malformed result)",
        "disk-full": "the disk filled while writing the results",
    },
}

#: the tables of a run: name -> (what a row is, its columns)
RUN_TABLES = {
    "coverage": ("one row per (slot, vehicle); `output.coverage = false` / `--no-coverage` leaves it out", COVERAGE),
    "rsus": ("one row per (slot, RSU)", RSUS),
    "dvit_tasks": ("one row per (task, policy) of the DViT layer ([dvit.md](dvit.md))", DVIT_TASKS),
    "cache_requests": ("one row per (request, policy), plus one per preload, of the cache layer "
                       "([cache.md](cache.md))", CACHE_REQUESTS),
    "moe_tasks": ("one row per (task, policy) of the MoE layer ([moe.md](moe.md))", MOE_TASKS),
}

# -- summary.json ------------------------------------------------------------------------------
SUMMARY = {
    "scenario": (NONE, "the scenario's name"),
    "scenario_file": (NONE, "the scenario file (or sumocfg) run"),
    "out_dir": (NONE, "the results folder"),
    "sumocfg": (NONE, "the SUMO configuration"),
    "seed": (NONE, "the seed (SUMO's and every random draw's)"),
    "status": (NONE, "how the run ended (values below)"),
    "error": (NONE, "what ended it, when not completed; null otherwise"),
    "warnings": (NONE, "the settings warned about before the run, and every policy a layer dropped mid-run"),
    "versions": (NONE, "versions of cosim, Python, SUMO, numpy, pandas, pyarrow, torch, …"),
    "plugins": (NONE, "the plugins loaded: module or .py path -> version (\"\" if unknown)"),
    "slot_s": ("s", "slot length gamma"),
    "slots": (NONE, "slots run"),
    "sim_time_end_s": ("s", "simulation time of the last slot's snapshot (null without a slot)"),
    "vehicles_seen": (NONE, "distinct vehicles seen"),
    "max_concurrent_vehicles": (NONE, "most vehicles in one slot"),
    "rsus": (NONE, "the RSUs, in the order `dvit_tasks.rsu` / `final_rsu` index them: one object each"),
    "rsus[].id": (NONE, "the RSU's id (the `rsu` of coverage, rsus, cache_requests)"),
    "rsus[].x": ("m", "position"),
    "rsus[].y": ("m", "position"),
    "rsus[].radius_m": ("m", "coverage radius"),
    "rsus[].compute_flops": ("FLOP/s", "its compute"),
    "rsus[].bandwidth_hz": ("Hz", "its band w0"),
    "wall_s.total": ("s", "wall time of the run"),
    "wall_s.sumo": ("s", "SUMO stepping and reading its state"),
    "wall_s.plugin": ("s", "world, layers, recording"),
    "wall_s.sumo_wait": ("s", "SUMO's side idle, waiting for the plugin"),
    "wall_s.plugin_wait": ("s", "the plugin's side idle, waiting for SUMO"),
    "wall_s.workers_wait": ("s", "`--jobs 3` or more: the plugin's process idle, waiting for the policy workers"),
    "cpu_s.plugin_process": ("s", "CPU time of the plugin's process"),
    "cpu_s.sumo_process": ("s", "CPU time of SUMO's own process (`--jobs 2` or more; else null)"),
    "cpu_s.policy_workers": ("s", "`--jobs 3` or more: each policy worker's CPU time"),
    "tables": (NONE, "rows written per table"),
    "dwell_prediction": (NONE, "predicted vs realised time with the serving RSU (docs/dwell.md); empty without "
                               "coverage.parquet"),
    "dwell_prediction.rows_served": (NONE, "coverage rows with a serving RSU"),
    "dwell_prediction.rows_compared": (NONE, "of them, compared (realised time known, prediction under the cap)"),
    "dwell_prediction.rows_censored": (NONE, "realised time unknown: still covered at the end"),
    "dwell_prediction.rows_capped": (NONE, "prediction at `world.dwell_cap_s`"),
    "dwell_prediction.rows_arrived": (NONE, "compared rows whose coverage ended by the vehicle's arrival"),
    "dwell_prediction.mean_error_s": ("s", "mean predicted - realised (bias)"),
    "dwell_prediction.mean_abs_error_s": ("s", "mean absolute error"),
    "dwell_prediction.median_abs_error_s": ("s", "median absolute error"),
    "dwell_prediction.p90_abs_error_s": ("s", "90th percentile of the absolute error"),
    "dwell_prediction.mean_realised_s": ("s", "mean realised time with the RSU"),
    "dwell_prediction.model": (NONE, "the dwell model used (`auto` resolved)"),
    "dwell_prediction.model_setting": (NONE, "`world.dwell_model` as configured"),
    "dwell_prediction.association": (NONE, "`world.association` in force"),
    "dwell_prediction.note": (NONE, "a note on the model chosen, when there is one"),
    "dwell_prediction.error": (NONE, "why the comparison failed (the run is kept)"),
    "request_window_s": ("s", "per task layer: [first, last] time a request may come (warm-up and drain left out)"),
    "layers": (NONE, "one block per layer: policy -> its numbers (below)"),
    "sumo_outputs": (NONE, "SUMO's own outputs converted to tables (docs/sumo_outputs.md); only when the run "
                           "declared some"),
}
#: keys under which any key may follow (their children are named by the run, not by cosim)
OPEN_KEYS = ("versions", "plugins", "tables", "request_window_s", "sumo_outputs", "layers")

# -- each layer's summary block: summary.json["layers"][LAYER][POLICY] ---------------------------
#: what every layer with a task table reports per policy (cosim.layers.kernel.Kernel.block, cosim.pairing)
TASK_BLOCK = {
    "tasks": (NONE, "tasks given to the policy"),
    "completed": (NONE, "tasks whose work all ran (done, and DViT's C3 / MoE's deadline failures that finished)"),
    "censored": (NONE, "tasks still running when the run ended"),
    "success_rate": (NONE, "done / (tasks - censored); null without an ended task"),
    "mean_latency_s": ("s", "mean latency of the policy's completed tasks"),
    "p95_latency_s": ("s", "95th percentile of that latency"),
    "vs_baseline.baseline": (NONE, "the policy compared against: the layer's first policy"),
    "vs_baseline.common_tasks": (NONE, "tasks both completed (the latency difference is over them)"),
    "vs_baseline.latency_diff_s": ("s", "mean latency difference policy - baseline over the common tasks"),
    "vs_baseline.latency_diff_ci95_s": ("s", "its 95 % interval half-width (Student t)"),
    "vs_baseline.given_tasks": (NONE, "tasks both were given and neither had censored"),
    "vs_baseline.success_diff": (NONE, "success-rate difference policy - baseline over the given tasks"),
    "vs_baseline.success_diff_ci95": (NONE, "its 95 % interval half-width"),
}
#: in every layer's block: a policy the layer dropped mid-run
DROPPED = {"error": (NONE, "only for a policy dropped mid-run: why (its numbers cover the tasks before)")}
DVIT_BLOCK = {
    "mean_planned_latency_s": ("s", "mean of `dvit_tasks.planned_latency_s` over the tasks planned"),
    "reschedules": (NONE, "re-plans over all tasks"),
    "migrations": (NONE, "RSU handovers followed over all tasks"),
    "execution.tasks_executed": (NONE, "`execute = true`: tasks whose plan ran for real on the DiT"),
    "execution.max_abs_diff_vs_single_device": (NONE, "largest |distributed - single-device| output difference"),
    "execution.local_prompt_left_user": (NONE, "whether the prompt ever left the user"),
    "execution.handoff_bytes_mean": ("B", "mean bytes per hand-off measured"),
    "execution.handoff_bytes_eq4": ("B", "n'·μ / 8, eq. (4)'s bytes per hand-off"),
}
CACHE_BLOCK = {
    "requests": (NONE, "requests (preloads not counted)"),
    "system_cost": ("s × weight", "sum of `cache_requests.system_cost` (Table II's system cost), a total"),
    "switching_cost": ("s × weight", "total switching cost"),
    "total_accuracy_cost": ("fraction × weight", "total accuracy cost"),
    "average_accuracy_cost": ("fraction × weight", "accuracy cost per request served at the edge"),
    "inference_latency": ("s × weight", "total inference latency (a total in seconds despite the name: no `_s`, "
                                        "Table II's column)"),
    "offloading_latency": ("s × weight", "total offloading latency (a total in seconds, Table II's column)"),
    "cloud_cost": ("s × weight", "total cloud cost"),
    "edge_execution_ratio": (NONE, "requests served at the edge / requests; null without requests"),
    "system_cost_per_request": ("s × weight", "system_cost / requests; null without requests"),
    "loads": (NONE, "models loaded after a miss"),
    "preloads": (NONE, "models preloaded (`lc-predictive`)"),
    "evictions": (NONE, "models evicted"),
    "cold_evictions": (NONE, "evicted models that served nothing since they were loaded"),
    "handed_over": (NONE, "queued responses delivered by another RSU (the vehicle handed over)"),
    "lost_responses": (NONE, "queued responses lost (the vehicle out of coverage by then)"),
}
MOE_BLOCK = {
    "mean_iv_utility": ("game units", "mean of `moe_tasks.iv_utility` over the tasks whose IVs were offered a price"),
    "mean_tv_utility": ("game units", "mean TV utility over those tasks"),
    "mean_nash_gap": ("game units", "mean Nash gap over those tasks"),
    "mean_eq_distance": (NONE, "mean `eq_distance` over the tasks with an interior equilibrium"),
    "eq_tasks": (NONE, "tasks with an interior equilibrium (`eq_distance` finite)"),
    "declined": (NONE, "tasks the TV bought nothing in (failure `priced-out`)"),
    "reroutes": (NONE, "reroutes over all tasks"),
    "moved_experts": (NONE, "experts moved over all tasks"),
    "mean_solve_ms": ("ms", "mean solver time per priced task"),
    "mean_solver_evals": (NONE, "mean follower evaluations per priced task"),
    "gate_device": (NONE, "`device = \"auto\"` or `\"cuda\"`: the device the gate model ran on"),
}
#: layer -> (its block's keys, whether it has a task table's TASK_BLOCK first)
LAYER_BLOCKS = {"dvit": (DVIT_BLOCK, True), "cache": (CACHE_BLOCK, False), "moe": (MOE_BLOCK, True)}

# -- a sweep's tables ------------------------------------------------------------------------------
CORE_ROW = {
    "vehicles_seen": (NONE, "the run's `vehicles_seen`"),
    "max_concurrent_vehicles": (NONE, "the run's `max_concurrent_vehicles`"),
    "wall_s": ("s", "the run's `wall_s.total`"),
}
SWEEP_TABLES = {
    "results.parquet": ("one row per (cell, layer, policy), and one `core` row per cell", {
        "cell": (NONE, "the cell's id (its folder under cells/)"),
        "scenario": (NONE, "the scenario's name in the sweep"),
        "seed": (NONE, "the cell's seed"),
        "GRID.KEY": (NONE, "one column per [grid] key: the cell's value (a list or table as JSON text)"),
        "layer": (NONE, "the layer; `core` for the run's own numbers (the columns of the core row, below)"),
        "policy": (NONE, "the policy; empty on a core row"),
        "KEY": (NONE, "every number of the policy's summary block, nested keys joined by dots "
                      "(`vs_baseline.latency_diff_s`, `execution.tasks_executed`): units as above"),
        "error": (NONE, "a policy dropped mid-run: why"),
        "dropped": (NONE, "1 for a policy dropped mid-run in this cell (its per-policy numbers are then blanked, NaN: "
                          "they cover only the tasks before it raised; `error` and `vs_baseline.*` kept), else 0; "
                          "empty on a core row"),
        "vs_baseline.baseline": (NONE, "the policy `vs_baseline` compares against (the sweep's `baseline`, when "
                                       "set, recomputed from the task table)"),
    }),
    "summary.csv": ("one row per (scenario, grid point, layer, policy): every numeric column of results.parquet "
                    "over the seeds", {
                        "scenario": (NONE, "as in results.parquet"),
                        "GRID.KEY": (NONE, "the grid point"),
                        "layer": (NONE, "as in results.parquet (`core` rows too)"),
                        "policy": (NONE, "as in results.parquet"),
                        "n": (NONE, "seeds (cells) in the group"),
                        "reruns": (NONE, "Ray engine: the group's cells that started more than once"),
                        "dropped": (NONE, "seeds where the policy was dropped mid-run (its numbers there are "
                                          "NaN: left out of every per-policy KEY.*; the task-level vs_baseline.* keep "
                                          "them, already over the tasks both served)"),
                        "KEY.mean": (NONE, "mean over the seeds (unit of KEY)"),
                        "KEY.ci95": (NONE, "95 % confidence half-width over the seeds (Student t)"),
                        "KEY.n": (NONE, "seeds with a finite value"),
                    }),
    "paired.csv": ("one row per (scenario, grid point, layer, policy other than the baseline): policy - baseline "
                   "per seed (docs/comparisons.md)", {
                       "scenario": (NONE, "as in results.parquet"),
                       "GRID.KEY": (NONE, "the grid point"),
                       "layer": (NONE, "the layer (no `core` rows)"),
                       "policy": (NONE, "the policy compared"),
                       "baseline": (NONE, "the policy it is compared with"),
                       "n": (NONE, "seeds both ran"),
                       "dropped": (NONE, "of those, seeds where the policy or the baseline was dropped mid-run "
                                         "(left out of every per-policy KEY.*; the task-level latency_diff_s.* "
                                         "and success_diff.* keep them, already over the tasks both served)"),
                       "KEY.diff": (NONE, "mean over the seeds of policy - baseline (unit of KEY)"),
                       "KEY.ci95": (NONE, "its 95 % interval half-width"),
                       "KEY.n": (NONE, "seeds where the difference is finite"),
                       "KEY.p": (NONE, "two-sided paired t-test p-value (KEY.n - 1 degrees of freedom); NaN "
                                       "with KEY.n < 2"),
                       "KEY.p_holm": (NONE, "Holm-adjusted p over the family (every policy vs the baseline on KEY "
                                            "in this scenario, grid point and layer)"),
                       "latency_diff_s.*, success_diff.*": (NONE, "the task-level differences: over the seeds, each "
                                                                  "run's `vs_baseline.latency_diff_s` / "
                                                                  "`success_diff` where its baseline is this one "
                                                                  "(NaN otherwise)"),
                   }),
    "cells.csv": ("one row per cell", {
        "cell": (NONE, "the cell's id"),
        "scenario": (NONE, "the scenario's name"),
        "seed": (NONE, "the seed"),
        "GRID.KEY": (NONE, "the grid point"),
        "status": (NONE, "completed, failed, running, interrupted, terminated or missing"),
        "error": (NONE, "why it failed"),
        "wall_s": ("s", "its wall time"),
        "attempts": (NONE, "Ray engine: how often it started"),
        "node": (NONE, "Ray engine: the node it ran on"),
    }),
}


def run_tables() -> dict[str, tuple[str, dict]]:
    """Each table of a run with its columns in the order cosim declares them, where it does (the
    recorder's schemas, DViT's COLUMNS); a declared column without a line here is an error."""
    from cosim.layers.dvit.layer import DViTLayer
    from cosim.recorder import COVERAGE_SCHEMA, RSUS_SCHEMA

    declared = {"coverage": list(COVERAGE_SCHEMA), "rsus": list(RSUS_SCHEMA), "dvit_tasks": list(DViTLayer.COLUMNS)}
    out = {}
    for name, (rows, cols) in RUN_TABLES.items():
        order = declared.get(name, list(cols))
        missing = [c for c in order if c not in cols]
        if missing:
            raise KeyError(f"{name}.{missing[0]}: a column without a line in cosim/columns.py")
        out[name] = (rows, {c: cols[c] for c in [*order, *(c for c in cols if c not in order)]})
    return out


def values() -> dict[tuple[str, str], dict[str, str]]:
    """Every categorical column's values; the cache's outcomes in :data:`OUTCOMES`' order (one
    without a line is an error)."""
    from cosim.layers.cache.layer import OUTCOMES

    doc = VALUES[("cache_requests", "outcome")]
    missing = [v for v in OUTCOMES if v not in doc]
    if missing:
        raise KeyError(f"cache_requests.outcome = {missing[0]!r}: a value without a line in cosim/columns.py")
    return {**VALUES, ("cache_requests", "outcome"): {v: doc[v] for v in [*OUTCOMES, *(v for v in doc if v not in
                                                                                       OUTCOMES)]}}


def layer_block(layer: str) -> dict[str, tuple[str, str]]:
    """The keys of a built-in layer's summary block (per policy)."""
    own, tasks = LAYER_BLOCKS[layer]
    return {**(TASK_BLOCK if tasks else {}), **own, **DROPPED}


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A Markdown table, as :func:`cosim.sweep.keys_table` writes one (``|`` escaped)."""
    return [f"| {' | '.join(head)} |", "|" + "---|" * len(head),
            *(f"| `{r[0]}` | " + " | ".join(_cell(c) for c in r[1:]) + " |" for r in rows)]


def _columns(cols: dict[str, tuple[str, str]], what: str = "column") -> list[str]:
    return _table((what, "unit", "meaning"), [(name, unit, meaning) for name, (unit, meaning) in cols.items()])


def _values(table: str, column: str, vals: dict[str, str]) -> list[str]:
    where = f'summary.json["{column}"]' if table == "summary.json" else f"{table}.{column}"
    return [f"Values of `{where}`:", "",
            *_table(("value", "meaning"), [(v or '""', meaning) for v, meaning in vals.items()]), ""]


def page() -> str:
    """docs/columns.md."""
    vals = values()
    lines = ["# Result columns", "",
             "Every column of every table `cosim run` / `cosim replay` and `cosim sweep` write, every key of "
             "`summary.json`, with its unit, and every value of a categorical column. Generated from "
             "`cosim/columns.py` (`python -c \"from cosim.columns import page; print(page(), end='')\" > "
             "docs/columns.md`); tests/test_docs.py fails when a table, a key or a value has no line there.", "",
             "Units: `–` is a count, a flag, a name or a number without unit; `s × weight` is seconds times the "
             "cache's `costs` preset weight (1 with the default `ours`); `game units` are the MoE pricing game's "
             "(ours, docs/moe.md). Read a table with `cosim.results.load(RUN_DIR)[NAME]` (docs/api.md).", "",
             "**Joining tables.** Every table names an RSU by its id (`rsu0`, or the ids a scenario gives), except "
             "`dvit_tasks.rsu` and `dvit_tasks.final_rsu`, which are positions in `summary.json[\"rsus\"]` "
             "(0-based): map them to ids first, else a join on `rsu` silently matches nothing:", "",
             "```python", "from cosim.results import load", "res = load(RUN_DIR)",
             "ids = dict(enumerate(r[\"id\"] for r in res.summary[\"rsus\"]))",
             "tasks = res[\"dvit_tasks\"].assign(rsu_id=lambda t: t[\"rsu\"].map(ids))", "```", "",
             "Vehicles are SUMO ids everywhere (`coverage.vehicle`, `dvit_tasks.user`, `moe_tasks.tv`, "
             "`cache_requests.vehicle`, SUMO's tripinfo `id`).", "",
             "## Tables of a run", ""]
    for name, (rows, cols) in run_tables().items():
        lines += [f"### `{name}.parquet`", "", rows[0].upper() + rows[1:] + ".", "", *_columns(cols), ""]
        for (table, column), v in vals.items():
            if table == name:
                lines += _values(table, column, v)
    lines += ["## `summary.json`", "",
              "Nested keys are joined by dots; `rsus[]` is each element of the list. The children of "
              f"{', '.join(f'`{k}`' for k in OPEN_KEYS)} are named by the run (versions, plugins, tables, layers, "
              "SUMO outputs).", "", *_columns(SUMMARY, "key"), "", *_values("summary.json", "status",
                                                                          vals[("summary.json", "status")])]
    lines += ["## Each layer's block: `summary.json[\"layers\"][LAYER][POLICY]`", "",
              "One block per policy; a sweep's results.parquet has the same numbers as columns.", ""]
    for layer in LAYER_BLOCKS:
        lines += [f"### `{layer}`", "", *_columns(layer_block(layer), "key"), ""]
    lines += ["## Tables of a sweep", "",
              "`GRID.KEY` stands for each [grid] key, `KEY` for each number of a layer's block (above) or of the "
              "core row.", ""]
    for name, (rows, cols) in SWEEP_TABLES.items():
        lines += [f"### `{name}`", "", rows[0].upper() + rows[1:] + ".", "", *_columns(cols), ""]
    lines += ["The `core` rows of results.parquet and summary.csv (`layer = \"core\"`, `policy` empty): the run's "
              "own numbers.", "", *_columns(CORE_ROW), ""]
    return "\n".join(lines)


__all__ = ["LAYER_BLOCKS", "OPEN_KEYS", "RUN_TABLES", "SUMMARY", "SWEEP_TABLES", "VALUES", "layer_block", "page",
           "run_tables", "values"]
