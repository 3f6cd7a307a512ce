"""The runtime: what runs an app once ``app.create()`` has opened its storage.

Its parts, each in its own module:

* :mod:`.context`: :class:`PyncetteContext`, the public API (schedule, inspect, run, shut down);
* :mod:`.scheduler`: the loop that claims due work and sleeps until more is due;
* :mod:`.runner`: one run of one task, from the claimed record to the outcome handed over, with its parts
  :mod:`.run` (the claimed record), :mod:`.body` (calling the task body), :mod:`.timing` (next and late
  runs) and :mod:`.failures` (what a failed run stores);
* :mod:`.inflight`: the runs claimed and not yet settled, their outcomes to the committer;
* :mod:`.workers`: the pool of tasks that execute runs;
* :mod:`.committer`: stores outcomes, batched;
* :mod:`.retries`: the retry policy for storage calls;
* :mod:`.agenda`, :mod:`.alarm`, :mod:`.slots`: what is due when, the loop's sleep, concurrency accounting;
* :mod:`.description`: the app as the runtime sees it, fixed at creation.
"""

from .context import PyncetteContext
from .scheduler import ShutdownTimeout

__all__ = ["PyncetteContext", "ShutdownTimeout"]
