"""Built-in gradient transforms: clipping (torch's clip_grad_value_ and clip_grad_norm_) and per-layer norms."""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check, real

#: gradient_clipping's options, by slot of ``h``
MAX_NORM, CLIP_VALUE = 0, 1
#: gradient_norms' statistics, by column of ``stats``
BATCHES, GRAD_NORM, GRAD_NORM_MAX, WEIGHT_NORM, STEP_RATIO = range(5)


@njit(cache=True)
def clip_kernel(g, p, offsets, lr, h, stats):
    clip_value, max_norm = h[CLIP_VALUE], h[MAX_NORM]
    if clip_value > 0.0:
        for i in range(g.shape[0]):
            g[i] = min(max(g[i], -clip_value), clip_value)
    if max_norm > 0.0:
        total = 0.0
        for i in range(g.shape[0]):
            total += g[i] * g[i]
        norm = math.sqrt(total)
        if norm > max_norm:
            scale = max_norm / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
            for i in range(g.shape[0]):
                g[i] *= scale


class GradientClipping(jitprop.GradientTransform):
    """Clip each gradient to [-clip_value, clip_value], then scale all so their global L2 norm is at most max_norm.

    torch.nn.utils.clip_grad_value_ and clip_grad_norm_ (norm over every
    parameter of the model, scale max_norm / (norm + 1e-6)); either may be
    left out (None).
    """

    name = "gradient_clipping"
    kernel = staticmethod(clip_kernel)
    cuda_kernel = "jitprop.default_plugins.transforms_cuda:clip_kernel"

    def __init__(self, max_norm=1.0, clip_value=None):
        self.max_norm = None if max_norm is None else real("max_norm", max_norm, self.name, low=0.0, low_open=True)
        self.clip_value = None if clip_value is None else real("clip_value", clip_value, self.name, low=0.0, low_open=True)
        check(self.max_norm is not None or self.clip_value is not None, f"{self.name}: give max_norm, clip_value or both")

    def hyper(self):
        h = np.zeros(2)
        h[MAX_NORM], h[CLIP_VALUE] = self.max_norm or 0.0, self.clip_value or 0.0
        return h


@njit(cache=True, fastmath={"reassoc"})
def squares(g, p):
    """(sum of g[i]^2, sum of p[i]^2), in float64.

    Reassociation (and only that) lets the sums vectorise: as a chain of
    dependent adds they cost S's step a quarter of its time. Indices from 0
    on a slice, not from an offset, so no negative-index check stops it.
    """
    gg = 0.0
    pp = 0.0
    for i in range(g.shape[0]):
        gg += np.float64(g[i]) * g[i]
        pp += np.float64(p[i]) * p[i]
    return gg, pp


@njit(cache=True)
def norms_kernel(g, p, offsets, lr, h, stats):
    for layer in range(offsets.shape[0] - 1):
        a, b = offsets[layer], offsets[layer + 1]
        gg, pp = squares(g[a:b], p[a:b])
        gn, pn = math.sqrt(gg), math.sqrt(pp)
        s = stats[layer]
        s[BATCHES] += 1.0
        s[GRAD_NORM] += gn
        s[GRAD_NORM_MAX] = max(s[GRAD_NORM_MAX], gn)
        s[WEIGHT_NORM] += pn
        s[STEP_RATIO] += lr * gn / pn if pn > 0.0 else 0.0


class GradientNorms(jitprop.GradientTransform):
    """Per layer and epoch: the mean and largest L2 norm of its gradient, its weights' norm, and lr * |g| / |w|.

    ``history`` holds one dict per epoch of arrays, one value per layer
    (zero for layers without parameters). lr * |g| / |w| is the size of a
    plain SGD step relative to the weights (Karpathy's update-to-data
    ratio, about 1e-3 for a layer that learns at a healthy pace).
    """

    name = "gradient_norms"
    stat_names = ("batches", "grad_norm", "grad_norm_max", "weight_norm", "step_ratio")
    kernel = staticmethod(norms_kernel)
    cuda_kernel = "jitprop.default_plugins.transforms_cuda:norms_kernel"

    def epoch_end(self, epoch, stats):
        batches = np.maximum(stats[:, BATCHES], 1.0)
        super().epoch_end(epoch, {
            "grad_norm": stats[:, GRAD_NORM] / batches, "grad_norm_max": stats[:, GRAD_NORM_MAX],
            "weight_norm": stats[:, WEIGHT_NORM] / batches, "step_ratio": stats[:, STEP_RATIO] / batches,
        })  # fmt: skip


@jitprop.hookimpl
def register_transforms(register):
    register(GradientClipping, aliases=("clip_grad_norm",))
    register(GradientNorms)
