"""What keeps a run from losing or spoiling work: the workdir lease, storage faults, an agreed
stop, divergence; ``run_guards.RunGuards`` puts them behind one object for the loop."""
