"""The rig's step library: what a scenario can say (docs/steps.md, ``posrig steps``).

:data:`STEP_MODULES` is the index: the pytest plugin (:mod:`rigs.plugin`, loaded through the
``pytest11`` entry point of an installed rig, or by a conftest) loads these modules as pytest
plugins, so a lab's repository of features uses every step by installing the rig.
"""

from __future__ import annotations

STEP_MODULES: tuple[str, ...] = (
    "steps.terminal_steps",
    "steps.purchase_steps",
    "steps.fault_steps",
    "steps.business_steps",
    "steps.network_fault_steps",
    "steps.card_fault_steps",
    "steps.power_fault_steps",
    "steps.entry_steps",
    "steps.qr_steps",
    "steps.qr_fault_steps",
)
