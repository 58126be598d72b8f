"""Task metrics beyond a conditioned task's own (Table 2 scores saliency by MAE, super-resolution
by PSNR, inpainting by FID: ``ddm.conditioned.task_metric``): a metric of one's own, for example
SSIM beside PSNR for super-resolution, is one registered function and one params.yaml entry.

    @ddm.task_metrics.register_task_metric("ssim", tasks=("super_resolution",), label="SSIM", digits=4)
    def ssim(samples, split):
        '''Mean SSIM of uint8 samples (N, C, H, W) against the test split's targets.'''
        ...

    conditioned_presets: {embedded: {tasks: {super_resolution: {..., metrics: [ssim]}}}}

``ddm evaluate-task`` scores every sample set by each metric the task's ``metrics`` names (its
record's ``extra``), ``ddm stats`` gathers them as it gathers the task's own, and Table 2 gives each
a column beside the task's own. The function takes the uint8 samples and the test split
(``ddm.conditioned``: ``target`` and the task's uint8 fields: ``hr_uint8``, ``mask_uint8``,
``image_uint8``) and returns a number. Registration states the tasks it fits (params validation
refuses it on another), its column label, whether higher is better and its decimals.

Standard library only (with ``ddm.names``): params validation reads the names through the
registries' snapshot (``ddm.registry.snapshot``).
"""

from __future__ import annotations

from typing import Any, Callable

from ddm.names import Names

__all__ = ["TASK_METRICS", "register_task_metric"]

#: Extra task metrics by params.yaml name (``conditioned_presets/<preset>/tasks/<task>/metrics``):
#: ``tasks`` (required) the tasks it fits, ``label`` its Table 2 column, ``higher_is_better``,
#: ``digits`` its decimals.
TASK_METRICS: Names[Callable[[Any, Any], float]] = Names("task metric", required=("tasks",),
                                                         defaults={"higher_is_better": True, "digits": 2})

#: Decorator: ``@register_task_metric(name, tasks=(...), label=..., higher_is_better=..., digits=...)``.
register_task_metric = TASK_METRICS.register
