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


@njit(cache=True, error_model="numpy")
def sgd_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type  # arithmetic in the parameters' precision, as torch does
    momentum, weight_decay = dt(h[0]), dt(h[3])
    nesterov = h[2] != 0.0
    one_minus_dampening, rate = dt(1.0 - h[1]), dt(lr)
    for i in range(p.shape[0]):
        d = g[i] + weight_decay * p[i]
        if h[0] != 0.0:
            # torch: the first step starts the buffer at the gradient itself.
            v = d if step == 1 else momentum * state[0, i] + one_minus_dampening * d
            state[0, i] = v
            d = d + momentum * v if nesterov else v
        p[i] -= rate * d


@njit(cache=True, error_model="numpy")
def adagrad_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type
    weight_decay, eps = dt(h[1]), dt(h[2])
    clr = dt(lr / (1.0 + (step - 1) * h[0]))
    for i in range(p.shape[0]):
        d = g[i] + weight_decay * p[i]
        s = state[0, i] + d * d
        state[0, i] = s
        p[i] -= clr * d / (np.sqrt(s) + eps)


@njit(cache=True, error_model="numpy")
def rmsprop_kernel(p, g, state, lr, h, step):
    dt = p.dtype.type
    alpha, eps, weight_decay, momentum = dt(h[0]), dt(h[1]), dt(h[2]), dt(h[3])
    one_minus_alpha, rate = dt(1.0 - h[0]), dt(lr)
    centered, use_momentum = h[4] != 0.0, h[3] > 0.0
    for i in range(p.shape[0]):
        d = g[i] + weight_decay * p[i]
        sq = alpha * state[0, i] + one_minus_alpha * d * d
        state[0, i] = sq
        if centered:
            ga = alpha * state[2, i] + one_minus_alpha * d
            state[2, i] = ga
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if use_momentum:
            buf = momentum * state[1, i] + d / avg
            state[1, i] = buf
            p[i] -= rate * buf
        else:
            p[i] -= rate * d / avg


@njit(cache=True, error_model="numpy")
def adam_kernel(p, g, state, lr, h, step):
    # Arithmetic in the parameters' own precision, as torch does: float32
    # models update 8 or 16 weights per vector instruction instead of 4 or 8.
    dt = p.dtype.type
    beta1, beta2, eps, weight_decay = dt(h[0]), dt(h[1]), dt(h[2]), dt(h[3])
    decoupled = h[4] != 0.0
    one_minus_beta1, one_minus_beta2 = dt(1.0 - h[0]), dt(1.0 - h[1])
    step_size = dt(lr / (1.0 - h[0] ** step))
    inv_sqrt_bias2 = dt(1.0 / math.sqrt(1.0 - h[1] ** step))
    shrink = dt(1.0 - lr * h[3])  # AdamW's decoupled decay
    for i in range(p.shape[0]):
        if decoupled:
            p[i] *= shrink
            d = g[i]
        else:
            d = g[i] + weight_decay * p[i]
        m = beta1 * state[0, i] + one_minus_beta1 * d
        v = beta2 * state[1, i] + one_minus_beta2 * d * d
        state[0, i] = m
        state[1, i] = v
        # eps outside the square root, added after bias correction (torch.optim.Adam)
        p[i] -= step_size * m / (np.sqrt(v) * inv_sqrt_bias2 + eps)


def _weight_decay(value, owner):
    return real("weight_decay", value, owner, low=0.0)


class SGD(jitprop.Optimizer):
    """Stochastic gradient descent with optional momentum and Nesterov momentum (torch.optim.SGD).

    v = momentum * v + (1 - dampening) * g;  p -= lr * (g + momentum * v if nesterov else v)
    """

    name = "sgd"
    n_state = 1
    kernel = staticmethod(sgd_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:sgd_kernel"

    def __init__(self, lr=0.001, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = real("momentum", momentum, "sgd", low=0.0)
        self.dampening = real("dampening", dampening, "sgd", low=0.0, high=1.0)
        check(isinstance(nesterov, bool), f"sgd: nesterov must be true or false, got {nesterov!r}")
        check(
            not nesterov or (self.momentum > 0 and self.dampening == 0),
            "sgd: nesterov momentum needs momentum > 0 and dampening 0",
        )
        self.nesterov = nesterov
        self.weight_decay = _weight_decay(weight_decay, "sgd")

    def hyper(self):
        return np.array([self.momentum, self.dampening, float(self.nesterov), self.weight_decay])


class Adagrad(jitprop.Optimizer):
    """Adagrad: per-weight steps shrink with the sum of squared gradients (Duchi et al. 2011)."""

    name = "adagrad"
    n_state = 1
    kernel = staticmethod(adagrad_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:adagrad_kernel"

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(lr)
        self.lr_decay = real("lr_decay", lr_decay, "adagrad", low=0.0)
        self.weight_decay = _weight_decay(weight_decay, "adagrad")
        self.initial_accumulator_value = real("initial_accumulator_value", initial_accumulator_value, "adagrad", low=0.0)
        self.eps = real("eps", eps, "adagrad", low=0.0)

    def init_state(self, state):
        state[0] = self.initial_accumulator_value

    def hyper(self):
        return np.array([self.lr_decay, self.weight_decay, self.eps])


class RMSprop(jitprop.Optimizer):
    """RMSprop: divide by a running root mean square of gradients (Hinton, Coursera lecture 6.5)."""

    name = "rmsprop"
    n_state = 3
    kernel = staticmethod(rmsprop_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:rmsprop_kernel"

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(lr)
        self.alpha = real("alpha", alpha, "rmsprop", low=0.0, high=1.0)
        self.eps = real("eps", eps, "rmsprop", low=0.0)
        self.weight_decay = _weight_decay(weight_decay, "rmsprop")
        self.momentum = real("momentum", momentum, "rmsprop", low=0.0)
        check(isinstance(centered, bool), f"rmsprop: centered must be true or false, got {centered!r}")
        self.centered = centered

    def hyper(self):
        return np.array([self.alpha, self.eps, self.weight_decay, self.momentum, float(self.centered)])


class Adam(jitprop.Optimizer):
    """Adam: momentum and per-weight scaling with bias correction (Kingma & Ba 2015).

    weight_decay adds weight_decay * p to the gradient (L2), as torch.optim.Adam does.
    """

    name = "adam"
    n_state = 2
    kernel = staticmethod(adam_kernel)
    cuda_kernel = "jitprop.default_plugins.optimizers_cuda:adam_kernel"
    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
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
        self.weight_decay = _weight_decay(weight_decay, self.name)

    def hyper(self):
        return np.array([*self.betas, self.eps, self.weight_decay, float(self.decoupled)])


class AdamW(Adam):
    """AdamW: Adam with weight decay decoupled from the gradient (Loshchilov & Hutter 2019).

    p *= 1 - lr * weight_decay before the Adam step, as torch.optim.AdamW does.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


@jitprop.hookimpl
def register_optimizers(register):
    for cls in (SGD, Adagrad, RMSprop, Adam, AdamW):
        register(cls)
