"""Built-in optimizers, sorted in order of increasing complexity.

Update rules, defaults and option names follow ``torch.optim`` so results
compare one to one. Each update is one fused loop over the flat buffers,
computed in the parameters' precision as torch does (float32 vectors hold
twice as many numbers); ``error_model="numpy"`` lets the divisions vectorise.
"""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check, real


# The slots of each optimizer's ``h`` (its hyper()), by name: the kernels read h[ADAM_EPS], not h[2].
SGD_MOMENTUM, SGD_DAMPENING, SGD_NESTEROV, SGD_WEIGHT_DECAY = range(4)
ADAGRAD_LR_DECAY, ADAGRAD_WEIGHT_DECAY, ADAGRAD_EPS = range(3)
RMSPROP_ALPHA, RMSPROP_EPS, RMSPROP_WEIGHT_DECAY, RMSPROP_MOMENTUM, RMSPROP_CENTERED = range(5)
ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_WEIGHT_DECAY, ADAM_DECOUPLED = range(5)


def slots(*values):
    """``h`` for a kernel: the values in their slots' order, as float64."""
    return np.array(values, dtype=np.float64)


# -- the update rules, one weight at a time ----------------------------------
# The CPU kernels below and the CUDA kernels (optimizers_cuda.py) both call these:
# each rule is written once. They return the new weight and the new state. math.sqrt
# keeps a float32's precision, like np.sqrt, and compiles for the GPU too.


@njit(cache=True, error_model="numpy")
def sgd_update(p, g, v, first, lr, momentum, one_minus_dampening, nesterov, weight_decay, use_momentum):
    d = g + weight_decay * p
    if use_momentum:
        # torch: the first step starts the buffer at the gradient itself.
        v = d if first else momentum * v + one_minus_dampening * d
        d = d + momentum * v if nesterov else v
    return p - lr * d, v


@njit(cache=True, error_model="numpy")
def adagrad_update(p, g, s, clr, weight_decay, eps):
    d = g + weight_decay * p
    s = s + d * d
    return p - clr * d / (math.sqrt(s) + eps), s


@njit(cache=True, error_model="numpy")
def rmsprop_update(p, g, sq, buf, ga, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered, use_momentum):
    d = g + weight_decay * p
    sq = alpha * sq + one_minus_alpha * d * d
    if centered:
        ga = alpha * ga + one_minus_alpha * d
        avg = math.sqrt(sq - ga * ga) + eps
    else:
        avg = math.sqrt(sq) + eps
    if use_momentum:
        buf = momentum * buf + d / avg
        return p - lr * buf, sq, buf, ga
    return p - lr * d / avg, sq, buf, ga


@njit(cache=True, error_model="numpy")
def adam_update(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, decoupled, step_size,
                inv_sqrt_bias2, shrink):  # fmt: skip
    if decoupled:
        p = p * shrink  # AdamW's decoupled decay
        d = g
    else:
        d = g + weight_decay * p
    m = beta1 * m + one_minus_beta1 * d
    v = beta2 * v + one_minus_beta2 * d * d
    # eps outside the square root, added after bias correction (torch.optim.Adam)
    return p - step_size * m / (math.sqrt(v) * inv_sqrt_bias2 + eps), m, v


# -- the CPU kernels: one fused loop over the flat buffers ---------------------


@njit(cache=True, error_model="numpy")
def sgd_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type  # arithmetic in the parameters' precision, as torch does
    momentum, weight_decay = dt(h[SGD_MOMENTUM]), dt(h[SGD_WEIGHT_DECAY])
    nesterov, use_momentum = h[SGD_NESTEROV] != 0.0, h[SGD_MOMENTUM] != 0.0
    one_minus_dampening, rate = dt(1.0 - h[SGD_DAMPENING]), dt(lr)
    for i in range(p.shape[0]):
        p[i], state[0, i] = sgd_update(p[i], g[i], state[0, i], step == 1, rate, momentum, one_minus_dampening, nesterov,
                                       weight_decay, use_momentum)  # fmt: skip


@njit(cache=True, error_model="numpy")
def adagrad_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type
    weight_decay, eps = dt(h[ADAGRAD_WEIGHT_DECAY]), dt(h[ADAGRAD_EPS])
    clr = dt(lr / (1.0 + (step - 1) * h[ADAGRAD_LR_DECAY]))
    for i in range(p.shape[0]):
        p[i], state[0, i] = adagrad_update(p[i], g[i], state[0, i], clr, weight_decay, eps)


@njit(cache=True, error_model="numpy")
def rmsprop_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type
    alpha, eps, weight_decay = dt(h[RMSPROP_ALPHA]), dt(h[RMSPROP_EPS]), dt(h[RMSPROP_WEIGHT_DECAY])
    momentum, one_minus_alpha, rate = dt(h[RMSPROP_MOMENTUM]), dt(1.0 - h[RMSPROP_ALPHA]), dt(lr)
    centered, use_momentum = h[RMSPROP_CENTERED] != 0.0, h[RMSPROP_MOMENTUM] > 0.0
    for i in range(p.shape[0]):
        p[i], state[0, i], state[1, i], state[2, i] = rmsprop_update(
            p[i], g[i], state[0, i], state[1, i], state[2, i], rate, alpha, one_minus_alpha, eps, weight_decay, momentum,
            centered, use_momentum)  # fmt: skip


@njit(cache=True, error_model="numpy")
def adam_kernel(p, g, state, lr, h, step):
    # Arithmetic in the parameters' own precision, as torch does: float32
    # models update 8 or 16 weights per vector instruction instead of 4 or 8.
    dt = p.dtype.type
    beta1, beta2, eps, weight_decay = dt(h[ADAM_BETA1]), dt(h[ADAM_BETA2]), dt(h[ADAM_EPS]), dt(h[ADAM_WEIGHT_DECAY])
    decoupled = h[ADAM_DECOUPLED] != 0.0
    one_minus_beta1, one_minus_beta2 = dt(1.0 - h[ADAM_BETA1]), dt(1.0 - h[ADAM_BETA2])
    step_size = dt(lr / (1.0 - h[ADAM_BETA1] ** step))
    inv_sqrt_bias2 = dt(1.0 / math.sqrt(1.0 - h[ADAM_BETA2] ** step))
    shrink = dt(1.0 - lr * h[ADAM_WEIGHT_DECAY])
    for i in range(p.shape[0]):
        p[i], state[0, i], state[1, i] = adam_update(p[i], g[i], state[0, i], state[1, i], beta1, beta2, one_minus_beta1,
                                                     one_minus_beta2, eps, weight_decay, decoupled, step_size,
                                                     inv_sqrt_bias2, shrink)  # fmt: skip


def _weight_decay(value, owner):
    return real("weight_decay", value, owner, low=0.0)


class _Decaying(jitprop.Optimizer):
    """The built-ins' ``weight_decay`` (L2 in the gradient) and ``decay_bias``: with decay_bias=False the
    kernel decays nothing and the Trainer's ``weight_decay`` transform decays all but the biases."""

    def _decay_options(self, weight_decay, decay_bias):
        self.weight_decay = _weight_decay(weight_decay, self.name)
        check(isinstance(decay_bias, bool), f"{self.name}: decay_bias must be true or false, got {decay_bias!r}")
        self.decay_bias = decay_bias

    @property
    def kernel_decay(self):
        """The weight decay the kernel applies itself."""
        return self.weight_decay if self.decay_bias else 0.0

    def decay_transform(self):
        if self.decay_bias or not self.weight_decay:
            return None
        return jitprop.transform("weight_decay", rate=self.weight_decay, decay_bias=False)


class SGD(_Decaying):
    """Stochastic gradient descent with optional momentum and Nesterov momentum (torch.optim.SGD).

    v = momentum * v + (1 - dampening) * g;  p -= lr * (g + momentum * v if nesterov else v)
    """

    name = "sgd"
    n_state = 1
    kernel = staticmethod(sgd_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:sgd_kernel"

    def __init__(self, lr=0.001, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, decay_bias=True):
        super().__init__(lr)
        self.momentum = real("momentum", momentum, "sgd", low=0.0)
        self.dampening = real("dampening", dampening, "sgd", low=0.0, high=1.0)
        check(isinstance(nesterov, bool), f"sgd: nesterov must be true or false, got {nesterov!r}")
        check(
            not nesterov or (self.momentum > 0 and self.dampening == 0),
            "sgd: nesterov momentum needs momentum > 0 and dampening 0",
        )
        self.nesterov = nesterov
        self._decay_options(weight_decay, decay_bias)

    def hyper(self):
        return slots(self.momentum, self.dampening, float(self.nesterov), self.kernel_decay)  # SGD_*


class Adagrad(_Decaying):
    """Adagrad: per-weight steps shrink with the sum of squared gradients (Duchi et al. 2011)."""

    name = "adagrad"
    n_state = 1
    kernel = staticmethod(adagrad_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:adagrad_kernel"

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, decay_bias=True):
        super().__init__(lr)
        self.lr_decay = real("lr_decay", lr_decay, "adagrad", low=0.0)
        self._decay_options(weight_decay, decay_bias)
        self.initial_accumulator_value = real("initial_accumulator_value", initial_accumulator_value, "adagrad", low=0.0)
        self.eps = real("eps", eps, "adagrad", low=0.0)

    def init_state(self, state):
        state[0] = self.initial_accumulator_value

    def hyper(self):
        return slots(self.lr_decay, self.kernel_decay, self.eps)  # ADAGRAD_*


class RMSprop(_Decaying):
    """RMSprop: divide by a running root mean square of gradients (Hinton, Coursera lecture 6.5)."""

    name = "rmsprop"
    n_state = 3
    kernel = staticmethod(rmsprop_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:rmsprop_kernel"

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, decay_bias=True):
        super().__init__(lr)
        self.alpha = real("alpha", alpha, "rmsprop", low=0.0, high=1.0)
        self.eps = real("eps", eps, "rmsprop", low=0.0)
        self._decay_options(weight_decay, decay_bias)
        self.momentum = real("momentum", momentum, "rmsprop", low=0.0)
        check(isinstance(centered, bool), f"rmsprop: centered must be true or false, got {centered!r}")
        self.centered = centered

    def hyper(self):
        return slots(self.alpha, self.eps, self.kernel_decay, self.momentum, float(self.centered))  # RMSPROP_*


class Adam(_Decaying):
    """Adam: momentum and per-weight scaling with bias correction (Kingma & Ba 2015).

    weight_decay adds weight_decay * p to the gradient (L2), as torch.optim.Adam does;
    decay_bias=False leaves the biases out of it.
    """

    name = "adam"
    n_state = 2
    kernel = staticmethod(adam_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:adam_kernel"
    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay_bias=True):
        super().__init__(lr)
        check(
            isinstance(betas, (tuple, list)) and len(betas) == 2,
            f"{self.name}: betas must be a pair like (0.9, 0.999), got {betas!r}",
        )
        self.betas = (
            real("betas[0]", betas[0], self.name, low=0.0, high=1.0, high_open=True),
            real("betas[1]", betas[1], self.name, low=0.0, high=1.0, high_open=True),
        )
        self.eps = real("eps", eps, self.name, low=0.0)
        self._decay_options(weight_decay, decay_bias)
        check(decay_bias or not self.decoupled, f"{self.name}: decay_bias=false needs the decay in the gradient, and"
              " adamw's is decoupled from it; use adam with weight_decay (L2) and decay_bias=false")  # fmt: skip

    def hyper(self):
        return slots(*self.betas, self.eps, self.kernel_decay, float(self.decoupled))  # ADAM_*


class AdamW(Adam):
    """AdamW: Adam with weight decay decoupled from the gradient (Loshchilov & Hutter 2019).

    p *= 1 - lr * weight_decay before the Adam step, as torch.optim.AdamW does.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay_bias=True):
        super().__init__(lr, betas, eps, weight_decay, decay_bias)


@jitprop.hookimpl
def register_optimizers(register):
    for cls in (SGD, Adagrad, RMSprop, Adam, AdamW):
        register(cls)
