"""The dense part of the filter-wise kappa, ``sum_j' G_jj' R_jj' B_jj'`` per filter j.

Per sample, ``G = K K^T`` is fixed, ``R = L Q^T`` comes as two thin factors from the patch
algebra and ``B = Zt Zt^T`` from the classifier. None of the three ``C_out x C_out``
matrices is ever formed whole: they are built a strip of rows at a time, multiplied and
summed while the strip is still in cache. Formed whole, every elementwise pass over them
streamed ``4 C_out^2`` bytes through memory and cost as much as the products themselves.
"""

from __future__ import annotations

from array_api_compat import device as _device

# Elements of one strip product (1 MiB in float32): the strip, its factors' panels and the
# matching rows of G stay in a core's cache.
STRIP_ELEMENTS = 1 << 18
# Below this many classes, ``(M Zt) o Zt`` (no C_out x C_out Gram) is cheaper than ``Zt Zt^T``.
SMALL_CLASSES = 32


def kappa_rows(xp, gm, left, right, zt, budget: int = STRIP_ELEMENTS, yt=None):
    """``sum_j' G_jj' R_jj' (Zt Yt^T)_jj'`` per row j, float64 ``(n, C_out)``.

    gm ``(C_out, C_out)`` symmetric; left, right ``(n, C_out, k)`` with ``R = left right^T``
    symmetric; zt, yt ``(n, C_out, C)`` with ``Zt Yt^T`` symmetric (yt None: ``yt = zt``, the
    affine classifier's ``B``; a non-linear head's ``Ahat`` adds its curvature's columns).
    Products run in the inputs' dtype. ``budget``: elements
    of one strip (rows x columns x samples); a budget of ``n C_out^2`` or more makes it one
    batched product (the GPU's choice).

    Many classes: only the upper triangle of strips ``j' >= j`` is formed (half the
    ``C C_out^2`` multiply-adds of the Gram); an off-diagonal strip adds its row sums to rows
    j and its column sums to rows j'. Few classes: full-width strips of ``M = G o R`` times
    ``Zt``.
    """
    n, c_out, classes = zt.shape
    few = classes < SMALL_CLASSES
    rows = max(1, min(c_out, budget // c_out))
    step = max(1, budget // (rows * c_out))
    yt = zt if yt is None else yt
    right_t = xp.permute_dims(right, (0, 2, 1))
    yt_t = xp.permute_dims(yt, (0, 2, 1))
    out = xp.zeros((n, c_out), dtype=xp.float64, device=_device(zt))
    for s in range(0, n, step):
        k = slice(s, min(n, s + step))
        for a in range(0, c_out, rows):
            e = min(c_out, a + rows)
            lo = 0 if few else a
            h = xp.matmul(left[k, a:e, :], right_t[k, :, lo:]) * gm[a:e, lo:]  # (G o R)[a:e, lo:]
            if few:
                out[k, a:e] = xp.astype(xp.sum(xp.matmul(h, yt[k]) * zt[k, a:e, :], axis=2),
                                        xp.float64)
                continue
            h = h * xp.matmul(zt[k, a:e, :], yt_t[k, :, a:])
            out[k, a:e] = out[k, a:e] + xp.astype(xp.sum(h, axis=2), xp.float64)
            if e < c_out:
                out[k, e:] = out[k, e:] + xp.astype(xp.sum(h[:, :, e - a:], axis=1), xp.float64)
    return out
