"""A model bigger than one machine: served across hosts with MLX's own distributed engine.

``mlx.launch`` starts one rank per host of a hostfile (ring over TCP or Thunderbolt, JACCL over
RDMA on Thunderbolt 5, or MPI); each rank loads its shard with ``mlx_lm.utils.sharded_load``
(tensor parallel, or pipeline) and runs the core's generation worker in step with the others,
rank 0 sharing every decision over MLX's collectives. The API process (cache, API, app) stays
outside the ranks, beside rank 0 on the first host, so a rank that dies fails its requests and
marks the model, and never takes the server down.

Pieces: :mod:`.hostfile` (the file ``mlx.launch`` reads), :mod:`.shards` (each rank's bytes),
:mod:`.launcher` and :mod:`.group` (the ranks, seen from the API process), :mod:`.rank` and
:mod:`.rank_worker` (a rank), :mod:`.collectives` and :mod:`.protocol` (what travels),
:mod:`.remote_worker` and :mod:`.loader` (the core's worker and loader interfaces),
:mod:`.serve` (``mlx-tui serve --hostfile``).
"""
