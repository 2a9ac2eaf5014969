"""Independent autograd references (float64): full Hessians, no closed forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


def hessian_measures(model, x, y, param: str) -> tuple[float, float]:
    """(trace, kappa) of the Hessian of the mean cross-entropy w.r.t. ``param``.

    kappa = sum_{s,s'} <w_s, w_s'> Tr H_{s,s'} over rows s (filters or classes).
    """
    model = model.double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    params.update({k: v.detach() for k, v in model.named_buffers()})
    w = params[param]

    def loss(wp):
        out = functional_call(model, {**params, param: wp}, (x.double(),))
        return F.cross_entropy(out, y)

    h = torch.autograd.functional.hessian(loss, w, vectorize=True)
    rows = w.shape[0]
    h = h.reshape(rows, -1, rows, w[0].numel())
    t = torch.einsum("aibi->ab", h)
    wf = w.reshape(rows, -1)
    return float(torch.trace(t)), float((t * (wf @ wf.T)).sum())


def loss_accuracy(model, x, y) -> tuple[float, float]:
    with torch.no_grad():
        out = model.double().eval()(x.double())
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())
