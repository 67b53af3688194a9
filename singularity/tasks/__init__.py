"""Entry points: ``python tasks/<task>.py CONFIG.yaml key=value ...`` or ``python -m singularity.tasks.<task>``."""
