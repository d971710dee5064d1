"""Root conftest: the rig's pytest plugin and the step libraries (never star-imported)."""

pytest_plugins = [
    "rigs.plugin",
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
]
