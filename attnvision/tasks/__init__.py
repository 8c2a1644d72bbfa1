"""The built-in tasks of the training loop: classification, detection and segmentation.

Each is a :class:`attnvision.train.tasks.Task` registered by name in ``TASKS``. Detection and
segmentation are registered by import path, so that torchvision's detection models load only when
one of them is first asked for. A task of your own registers the same way::

    from attnvision.train.tasks import Task, register_task

    @register_task
    class MyTask(Task):
        name = "mine"
        ...
"""
from ..train.tasks import TASKS, Task, get_task, register_task
from .classification import ClassificationTask

TASKS.register_lazy("detection", "attnvision.tasks.dense:DetectionTask")
TASKS.register_lazy("segmentation", "attnvision.tasks.dense:SegmentationTask")

__all__ = ["ClassificationTask", "TASKS", "Task", "get_task", "register_task"]
