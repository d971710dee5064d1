"""Root conftest: the rig's pytest plugin, which loads the step library (steps.STEP_MODULES).
An installed rig loads the same plugin through its ``pytest11`` entry point."""

pytest_plugins = ["rigs.plugin"]
