"""One job launcher for the seed runs, the ablation grid and the search: a local queue over GPUs or CPU
slots with resume (:mod:`.queue`), SLURM array scripts (:mod:`.slurm`), and the ``seeds`` / ``ablate``
commands on top (:mod:`.experiments`)."""
from .queue import CPU, Job, LaunchError, Queue, deal, has_summary, parse_slots, rotate_log, run_local, write_json  # noqa: F401
from .slurm import SlurmOptions, array_script  # noqa: F401
