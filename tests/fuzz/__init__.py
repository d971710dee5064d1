"""Coverage-guided fuzzing of the public parsers and the simulators' message handlers.

``tests/fuzz/targets.py`` is the registry (target name → function taking bytes, the project's
errors it may raise); ``python -m tests.fuzz`` runs each target under atheris in its own process
with ``fixtures/fuzz/<target>/`` as the seed corpus; ``python -m tests.fuzz.seeds`` writes that
corpus again from the project's own encoders and fixtures; ``tests/fuzz/test_corpus.py`` replays
every seed (and every regression input) without atheris, in ``make test``.
"""
