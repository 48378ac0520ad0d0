"""Producers that feed the detection stream: synthetic card transactions and emails with
ground-truth labels published later, and a replay of labelled datasets.

``python -m producers {transactions,emails,replay} --help`` (see :mod:`producers.cli`).

* :mod:`producers.transactions` / :mod:`producers.emails`: the seeded simulators;
  :mod:`producers.population` and :mod:`producers.fraud` are the world and the fraud stories.
* :mod:`producers.labels`: the delay queue that turns truth into late labels.
* :mod:`producers.truth`: the generator's knowledge, written for evaluation only.
* :mod:`producers.clock`, :mod:`producers.pacing`: simulated or wall time; rate and progress.
* :mod:`producers.publisher`, :mod:`producers.partitioning`: Kafka, keyed and batched.
* :mod:`producers.replay`: CSV/Parquet datasets as streams.
"""
