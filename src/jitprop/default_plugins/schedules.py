"""Built-in learning-rate schedules, per epoch, as torch.optim.lr_scheduler defines them."""

import math

import numpy as np

import jitprop
from jitprop.components import positive_int, real

# The slots of each schedule's ``h`` (its hyper(), for the CUDA kernels), by name.
STEP_SIZE, STEP_GAMMA = 0, 1
EXPONENTIAL_GAMMA = 0
COSINE_T_MAX, COSINE_ETA_MIN = 0, 1


class StepDecay(jitprop.Schedule):
    """Multiply the rate by gamma every step_size epochs (torch StepLR)."""

    name = "step"
    cuda_kernel = "jitprop.default_plugins.schedules_cuda:step_kernel"

    def __init__(self, step_size=10, gamma=0.1, warmup=0):
        super().__init__(warmup)
        self.step_size = positive_int("step_size", step_size, "step")
        self.gamma = real("gamma", gamma, "step", low=0.0)

    def hyper(self):
        return np.array([self.step_size, self.gamma], dtype=np.float64)  # STEP_SIZE, STEP_GAMMA

    def rate(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(jitprop.Schedule):
    """Multiply the rate by gamma every epoch (torch ExponentialLR)."""

    name = "exponential"
    cuda_kernel = "jitprop.default_plugins.schedules_cuda:exponential_kernel"

    def __init__(self, gamma=0.95, warmup=0):
        super().__init__(warmup)
        self.gamma = real("gamma", gamma, "exponential", low=0.0)

    def hyper(self):
        return np.array([self.gamma], dtype=np.float64)  # EXPONENTIAL_GAMMA

    def rate(self, epoch, base_lr):
        return base_lr * self.gamma**epoch


class CosineDecay(jitprop.Schedule):
    """Half a cosine from the base rate down to eta_min over T_max epochs, then eta_min (torch CosineAnnealingLR)."""

    name = "cosine"
    cuda_kernel = "jitprop.default_plugins.schedules_cuda:cosine_kernel"

    def __init__(self, T_max=10, eta_min=0.0, warmup=0):
        super().__init__(warmup)
        self.T_max = positive_int("T_max", T_max, "cosine")
        self.eta_min = real("eta_min", eta_min, "cosine", low=0.0)

    def hyper(self):
        return np.array([self.T_max, self.eta_min], dtype=np.float64)  # COSINE_T_MAX, COSINE_ETA_MIN

    def rate(self, epoch, base_lr):
        t = min(epoch, self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


@jitprop.hookimpl
def register_schedules(register):
    register(StepDecay)
    register(ExponentialDecay)
    register(CosineDecay)
