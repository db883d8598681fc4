"""Torch kernels for the iterative solvers: composition, its adjoints and its least-squares matrices.

All are matrix products (GEMMs) with one fixed 0/1 tensor ``M[pq, ab, uv] = 1`` iff
``(u, v) = (p + a, q + b)`` (taps ``pq`` of f2, ``ab`` of f1, ``uv`` of the composition), so they run on
any device without small convolutions, and the gradients are written out rather than taped.
"""

from __future__ import annotations


class Composer:
    """Composition of (Cmid, Cin, k1, k1) and (Cout, Cmid, k2, k2) kernels on one torch device.

    Parameters
    ----------
    k1, k2 : int
        Kernel sizes of the first and second factor.
    device : torch.device
    dtype : torch.dtype
    """

    def __init__(self, k1: int, k2: int, device, dtype):
        import torch

        self.k1, self.k2, self.kt = k1, k2, k1 + k2 - 1
        m = torch.zeros((k2, k2, k1, k1, self.kt, self.kt), dtype=dtype)
        for p in range(k2):
            for q in range(k2):
                for a in range(k1):
                    for b in range(k1):
                        m[p, q, a, b, p + a, q + b] = 1.0
        m = m.reshape(k2 * k2, k1 * k1, self.kt * self.kt).to(device)
        self._ab_pquv = m.permute(1, 0, 2).reshape(k1 * k1, -1).contiguous()  # (ab, pq uv)
        self._pq_abuv = m.reshape(k2 * k2, -1).contiguous()  # (pq, ab uv)
        self._pqab_uv = m.reshape(k2 * k2 * k1 * k1, -1).contiguous()  # (pq ab, uv)
        self._uv_pqab = self._pqab_uv.T.contiguous()  # (uv, pq ab)

    def spread_f1(self, f1):
        """``S[m, c, pq, uv] = sum_ab f1[m, c, ab] M[pq, ab, uv]`` (f1 placed at every f2 offset)."""
        cmid, cin = f1.shape[:2]
        s = f1.reshape(cmid * cin, -1) @ self._ab_pquv
        return s.reshape(cmid, cin, self.k2 * self.k2, self.kt * self.kt)

    def compose(self, f1, f2):
        """Same as :func:`netmorph.solvers.compose`: (Cout, Cin, kt, kt).

        One GEMM over the middle channels, ``T[o, pq, c, ab] = sum_m f2[o, m, pq] f1[m, c, ab]``, then
        one small GEMM with ``M`` that adds every tap pair into its output tap.
        """
        cmid, cin = f1.shape[:2]
        cout = f2.shape[0]
        t = f2.permute(0, 2, 3, 1).reshape(-1, cmid) @ f1.reshape(cmid, -1)  # (o pq, c ab)
        t = t.reshape(cout, self.k2 * self.k2, cin, -1).permute(0, 2, 1, 3).reshape(cout * cin, -1)
        return (t @ self._pqab_uv).reshape(cout, cin, self.kt, self.kt)

    def gather(self, r):
        """``Rg[(o, pq), (c, ab)] = r[o, c, p + a, q + b]``: the windows of ``r`` that each tap pair sees."""
        cout, cin = r.shape[:2]
        g = r.reshape(cout * cin, -1) @ self._uv_pqab  # (o c, pq ab)
        g = g.reshape(cout, cin, self.k2 * self.k2, -1).permute(0, 2, 1, 3)
        return g.reshape(cout * self.k2 * self.k2, -1)

    def adjoint_f1(self, r, f2):
        """``d <r, compose(f1, f2)> / d f1`` for a (Cout, Cin, kt, kt) array ``r``."""
        cout, cmid = f2.shape[:2]
        cin = r.shape[1]
        out = f2.permute(1, 0, 2, 3).reshape(cmid, -1) @ self.gather(r)  # (m, c ab)
        return out.reshape(cmid, cin, self.k1, self.k1)

    def adjoint_f2(self, r, f1):
        """``d <r, compose(f1, f2)> / d f2`` for a (Cout, Cin, kt, kt) array ``r``."""
        cmid = f1.shape[0]
        cout = r.shape[0]
        out = self.gather(r) @ f1.reshape(cmid, -1).T  # (o pq, m)
        return out.reshape(cout, self.k2, self.k2, cmid).permute(0, 3, 1, 2)

    def matrix_for_f1(self, f2):
        """``A``: ``compose(f1, f2)[o, c, uv] = (A @ X)[(o, uv), c]``, ``X[(m, ab), c] = f1[m, c, ab]``."""
        cout, cmid = f2.shape[:2]
        a = f2.reshape(cout * cmid, -1) @ self._pq_abuv  # (o m, ab uv)
        a = a.reshape(cout, cmid, self.k1 * self.k1, -1).permute(0, 3, 1, 2)
        return a.reshape(cout * self.kt * self.kt, cmid * self.k1 * self.k1)

    def matrix_for_f2(self, f1):
        """``A``: ``compose(f1, f2)[o, c, uv] = (A @ X)[(c, uv), o]``, ``X[(m, pq), o] = f2[o, m, pq]``."""
        cmid, cin = f1.shape[:2]
        s = self.spread_f1(f1).permute(1, 3, 0, 2)  # (c, uv, m, pq)
        return s.reshape(cin * self.kt * self.kt, cmid * self.k2 * self.k2)
