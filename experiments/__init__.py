"""The paper's experiments: sweeps of configs, their runner, reports and evaluation modes."""
