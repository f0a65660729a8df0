"""``desim explore``: search the interleavings of a small scenario for one that breaks a design.

A scenario (``configs/explore/*.yaml``, ``desim.explore.spec``) is a machine of 2-4 CPUs, a few
mms with a few tables each, and a script of operations (fault, retract, collapse, munmap, mmap,
exit), fixed or drawn. A *schedule* fixes everything a real machine leaves open
(``desim.explore.run``): which CPU runs each operation and when it starts (within a race window
of the previous one, exactly on a tick, or anywhere), which of several events due at the same
instant goes first, and how long each variable cost takes within its distribution. The search
(``desim.explore.search``) runs schedules until the safety checker or a design invariant
reports, then shrinks that schedule to the shortest one that still fails; ``desim.explore.output``
prints it as numbered per-CPU steps and writes it as a replay file, ``desim.explore.command`` is
the command line's part.

**Why hypothesis.** What the explorer needs is a generator of schedules whose failures shrink,
and determinism. Hypothesis's engine, the one under both its stateful testing and its
``data()`` strategy, records every example as one sequence of choices and shrinks that sequence
(deleting steps, then minimising each choice, shortlex), whatever produced it, including draws
made while the simulation runs: most choice points here (which tied event goes first, which
quantile a cost takes) appear only as the machine runs, so they are drawn interactively and
shrink with the script. We use ``data()`` rather than a ``RuleBasedStateMachine``: a step is
not a synchronous call but an operation running for microseconds on a simulated CPU, so rules
would reduce to "start an operation" and "let time pass", with the interesting choices still
drawn inside the latter, and the resolved script would have to be rebuilt from rule calls to be
replayed. A hand-written depth-first search (stateless model checking in the manner of CHESS or
dscheck) would enumerate orders exhaustively and could prune by partial-order reduction, but it
must re-run every prefix (SimPy generators cannot be snapshotted), needs a state hash sound for
the whole model, and a shrinker of its own; and the space here (start times, cost quantiles) is
finite only once bounded by hand. Plain random runs (``configs/race-hunt.yaml``) find bugs by
luck and give no minimal counterexample. Coverage-guided fuzzers (atheris) optimise code
coverage, not counterexample size, and symbolic executors (CrossHair) cannot see through
SimPy's scheduler. Hypothesis is maintained, already the project's test dependency, and
deterministic with a fixed seed and no example database.
"""
