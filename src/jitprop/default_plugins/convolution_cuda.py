"""numba.cuda kernels of conv2d, beside its CPU kernels in convolution.py.

One thread per value written, each summing what it needs (a gather): every
output from its window, every weight gradient over the batch and the output
pixels, every input gradient from the outputs that read it. Nothing is added
atomically, so results are the same from run to run.
"""

from numba import cuda

from jitprop import cuda_launch
from jitprop.default_plugins.convolution import HAS_BIAS
from jitprop.default_plugins.geometry import geometry


@cuda.jit
def _forward(x, w, b, has_bias, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, out):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, out.shape[0] * out.shape[1], stride):
        n, rest = e // out.shape[1], e % out.shape[1]
        o, y, z = rest // (oh * ow), (rest // ow) % oh, rest % ow
        total = b[o] if has_bias else w[0, 0] * 0
        for c in range(c_in):
            for i in range(kh):
                src_y = y * sh - ph + i
                if 0 <= src_y < height:
                    for j in range(kw):
                        src_x = z * sw - pw + j
                        if 0 <= src_x < width:
                            total += w[o, (c * kh + i) * kw + j] * x[n, (c * height + src_y) * width + src_x]
        out[n, rest] = total


@cuda.jit
def _weight_grad(x, g, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, grad_w):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    taps = c_in * kh * kw
    for e in range(first, grad_w.shape[0] * taps, stride):
        o, t = e // taps, e % taps
        c, i, j = t // (kh * kw), (t // kw) % kh, t % kw
        total = g[0, 0] * 0
        for n in range(x.shape[0]):
            for y in range(oh):
                src_y = y * sh - ph + i
                if 0 <= src_y < height:
                    for z in range(ow):
                        src_x = z * sw - pw + j
                        if 0 <= src_x < width:
                            total += g[n, (o * oh + y) * ow + z] * x[n, (c * height + src_y) * width + src_x]
        grad_w[o, t] = total


@cuda.jit
def _bias_grad(g, pixels, grad_b):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for o in range(first, grad_b.shape[0], stride):
        total = g[0, 0] * 0
        for n in range(g.shape[0]):
            for q in range(o * pixels, (o + 1) * pixels):
                total += g[n, q]
        grad_b[o] = total


@cuda.jit
def _input_grad(g, w, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, grad_in):
    c_out = w.shape[0]
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, grad_in.shape[0] * grad_in.shape[1], stride):
        n, rest = e // grad_in.shape[1], e % grad_in.shape[1]
        c, a, s = rest // (height * width), (rest // width) % height, rest % width
        total = g[0, 0] * 0
        for i in range(kh):
            dy = a + ph - i  # output row y reads input row a through tap i when y * sh == dy
            if dy >= 0 and dy % sh == 0 and dy // sh < oh:
                y = dy // sh
                for j in range(kw):
                    dx = s + pw - j
                    if dx >= 0 and dx % sw == 0 and dx // sw < ow:
                        z = dx // sw
                        for o in range(c_out):
                            total += g[n, (o * oh + y) * ow + z] * w[o, (c * kh + i) * kw + j]
        grad_in[n, rest] = total


def _views(p, h, x, out):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    taps, c_out = c_in * kh * kw, out.shape[1] // (oh * ow)
    w = p[: c_out * taps].reshape((c_out, taps))
    b = p[c_out * taps : c_out * taps + c_out] if h[HAS_BIAS] else p[:1]  # no bias: never read
    return w, b, (c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow)


def conv2d_forward(p, h, x, out, cache, training, seed, scratch):
    w, b, geo = _views(p, h, x, out)
    _forward[cuda_launch.grid_1d(out.size)](x, w, b, bool(h[HAS_BIAS]), *geo, out)


def conv2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, scratch):
    w, _, geo = _views(p, h, x, grad_out)
    grad_w, grad_b, _ = _views(grad_p, h, x, grad_out)
    _weight_grad[cuda_launch.grid_1d(grad_w.size)](x, grad_out, *geo, grad_w)
    if h[HAS_BIAS]:
        _bias_grad[cuda_launch.grid_1d(grad_b.size)](grad_out, geo[-2] * geo[-1], grad_b)
    if grad_in.shape[0] > 0:
        _input_grad[cuda_launch.grid_1d(grad_in.size)](grad_out, w, *geo, grad_in)
