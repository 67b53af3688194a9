"""The task model for a config: ``pretrain`` / ``retrieval`` / ``vqa`` (model_pretrain / model_retrieval / model_vqa)."""
from __future__ import annotations

import torch


def build_model_for_task(task: str, config) -> torch.nn.Module:
    """``pretrain`` / ``retrieval`` / ``vqa`` model for ``config`` (random initialisation)."""
    from singularity.models.singularity import SingularityPretrain, SingularityRetrieval
    from singularity.models.vqa import SingularityQA

    classes = {"pretrain": SingularityPretrain, "retrieval": SingularityRetrieval, "vqa": SingularityQA}
    if task not in classes:
        raise ValueError(f"unknown task {task!r}")
    return classes[task](config)
