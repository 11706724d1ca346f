"""Built-in gradient transforms: clipping (torch's clip_grad_value_ and clip_grad_norm_), per-layer norms,
and L2 weight decay that can leave biases alone."""

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


#: weight_decay's ``h``: the rate, then the decayed ranges as (start, end) pairs of the flat buffer
DECAY_RATE, DECAY_RANGES = 0, 1


@njit(cache=True)
def decay_range(g, p, rate):
    """g += rate * p over one range. Indices from 0 on slices (as in ``squares``): no negative-index
    check, so the loop vectorises (7.5k parameters: 19 us a call from an offset, 3 us so, dispatch included)."""
    for i in range(g.shape[0]):
        g[i] += rate * p[i]


@njit(cache=True)
def decay_kernel(g, p, offsets, lr, h, stats):
    rate = h[DECAY_RATE]
    for r in range(DECAY_RANGES, h.shape[0], 2):
        a, b = int(h[r]), int(h[r + 1])
        decay_range(g[a:b], p[a:b], rate)


class WeightDecay(jitprop.GradientTransform):
    """L2 weight decay as a gradient term: g += rate * p, on every parameter or (``decay_bias=False``) on all but biases.

    The optimizers' own ``weight_decay`` option decays every parameter, as
    torch's do; this leaves the parameters named ``bias`` alone when asked,
    as scikit-learn's ``alpha`` and CS231n's L2 do (the penalty
    rate / 2 * sum(W^2) added to the loss). The penalty itself is not in the
    logged loss.
    """

    name = "weight_decay"
    kernel = staticmethod(decay_kernel)
    cuda_kernel = "jitprop.default_plugins.transforms_cuda:decay_kernel"

    def __init__(self, rate=1e-4, decay_bias=True):
        self.rate = real("rate", rate, self.name, low=0.0)
        check(isinstance(decay_bias, (bool, np.bool_)), f"{self.name}: decay_bias must be true or false, got {decay_bias!r}")
        self.decay_bias = bool(decay_bias)
        self._ranges = None

    def setup(self, model):
        ranges = []
        for key, (a, b) in model.param_ranges().items():
            if self.decay_bias or key.rsplit(".", 1)[-1] != "bias":
                if ranges and ranges[-1][1] == a:  # consecutive tensors: one range
                    ranges[-1][1] = b
                else:
                    ranges.append([a, b])
        self._ranges = ranges

    def hyper(self):
        check(self._ranges is not None, f"{self.name}: setup(model) first (a Trainer calls it)")
        return np.array([self.rate, *(i for r in self._ranges for i in r)], dtype=np.float64)


@jitprop.hookimpl
def register_transforms(register):
    register(GradientClipping, aliases=("clip_grad_norm",))
    register(GradientNorms)
    register(WeightDecay, aliases=("l2",))
