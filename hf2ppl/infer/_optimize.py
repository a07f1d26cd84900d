r"""A bounded Newton (Levenberg-Marquardt, projected) minimiser written in JAX.

The minimiser works on the *full* flat parameter vector with a float mask of
fixed components, so a free fit, a fixed-POI fit and a fit with any other
parameter fixed are the *same* compiled function: bounds, start point and the
fixed mask are ordinary (traced) arrays and everything is ``vmap``-able over
them, over datasets and over nominal yields.

One iteration, with :math:`g, H` the exact gradient and Hessian of the
objective :math:`f` at :math:`x`:

1. the *active set*: fixed components and components at a bound whose gradient
   points outward (:math:`x_i = l_i, g_i > 0` or :math:`x_i = u_i, g_i < 0`);
2. the damped Newton step on the remaining components,
   :math:`(H_{FF} + \lambda\,\mathrm{diag}|H_{FF}|)\,p_F = -g_F`;
3. projection onto the box, :math:`x' = \mathrm{clip}(x + p, l, u)` (a fit at a
   bound lands *exactly* on it);
4. accept if :math:`f(x') < f(x)` (ratio test against the quadratic model);
   shrink :math:`\lambda` after good steps, grow it after rejected ones.

Convergence: the projected gradient :math:`\|x - \mathrm{clip}(x - g, l, u)\|_\infty`
(fixed components excluded) below ``gtol``, or no further decrease possible at
machine precision with a projected gradient below ``1e3 * gtol``.

:func:`make_solver` wraps the loop in a ``jax.custom_vjp`` whose backward pass
uses the implicit function theorem at the optimum,
:math:`\partial x^*_F/\partial\eta = -H_{FF}^{-1}\,\partial_\eta g_F`
(active components do not move), so gradients of anything computed from the
fit never unroll the iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = ["SolveResult", "make_solver"]


class SolveResult(NamedTuple):
    """Output of a solver call (all JAX arrays; batched under vmap)."""

    x: object  # (P,) the minimiser
    fun: object  # () objective at x
    grad_norm: object  # () projected-gradient inf-norm at x
    niter: object  # () iterations used
    converged: object  # () bool
    hessian: object  # (P, P) exact Hessian of the objective at x (not differentiable)


def _free_mask(x, g, lo, hi, fixed):

    at_lo = (x <= lo) & (g > 0)
    at_hi = (x >= hi) & (g < 0)
    return (fixed < 0.5) & ~at_lo & ~at_hi


def _proj_grad_norm(x, g, lo, hi, fixed):
    import jax.numpy as jnp

    pg = x - jnp.clip(x - g, lo, hi)
    pg = jnp.where(fixed > 0.5, 0.0, pg)
    return jnp.max(jnp.abs(pg)) if x.shape[0] else jnp.zeros((), x.dtype)


def make_solver(objective: Callable, *, maxiter: int = 200, gtol: float = 1e-9, curvature: Callable | None = None,
                with_hessian: bool = True) -> Callable:
    """Build ``solve(x0, lo, hi, fixed, *args) -> SolveResult`` minimising ``objective(x, *args)``.

    ``fixed`` is a float mask (1.0 = keep at ``x0``). ``curvature(x, *args)``, if given, replaces the exact
    Hessian as the model matrix of the iterations (e.g. a Gauss-Newton matrix, much cheaper for models with
    hundreds of parameters); the gradient, the convergence test and the returned Hessian stay exact.
    ``with_hessian=False`` (only with ``curvature``) skips the final exact Hessian (``hessian`` is then None). ``args`` (data, nominal yields...) are
    differentiable through the custom VJP (implicit function theorem); ``x0, lo, hi, fixed`` are not.

    Example:
        >>> import jax.numpy as jnp
        >>> solve = make_solver(lambda x, a: jnp.sum((x - a) ** 2))
        >>> r = solve(jnp.zeros(2), jnp.zeros(2), jnp.ones(2) * 5, jnp.zeros(2), jnp.array([1.0, -1.0]))
        >>> [float(v) for v in r.x]
        [1.0, 0.0]
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    value_and_grad = jax.value_and_grad(objective)

    def fgh(x, *args):
        """Value, gradient and Hessian in one trace: forward-mode JVPs (one per basis vector) of the gradient."""

        def gf(y):
            f, g = value_and_grad(y, *args)
            return g, f

        eye = jnp.eye(x.shape[0], dtype=x.dtype)
        g, H, f = jax.vmap(lambda v: jax.jvp(gf, (x,), (v,), has_aux=True), out_axes=(None, 0, None))(eye)
        return f, g, H

    def _run(x0, lo, hi, fixed, *args):
        x0 = jnp.where(fixed > 0.5, x0, jnp.clip(x0, lo, hi))  # fixed values may sit outside the bounds
        dtype = x0.dtype
        P = x0.shape[0]
        eye = jnp.eye(P, dtype=dtype)
        inf = jnp.asarray(jnp.inf, dtype)

        def propose(x, g, H, lam):
            free = _free_mask(x, g, lo, hi, fixed)
            m = free.astype(dtype)
            gF = g * m
            HF = H * m[:, None] * m[None, :]
            d = jnp.abs(jnp.diagonal(HF))
            scale = jnp.where(d > 1e-12, d, 1.0)
            A = HF + jnp.diag(lam * scale * m) + eye * (1.0 - m)[:, None]
            p = jnp.linalg.solve(A, -gF) * m
            p = jnp.where(jnp.isfinite(p), p, -gF / scale)
            xn = jnp.clip(x + p, lo, hi)
            return jnp.where(fixed > 0.5, x, xn)

        def cond(s):
            return (~s["done"]) & (s["it"] < maxiter)

        def body(s):
            x, f, g, H, lam, xt = s["x"], s["f"], s["g"], s["H"], s["lam"], s["xt"]
            if curvature is None:
                ft, gt, Ht = fgh(xt, *args)
            else:
                ft, gt = value_and_grad(xt, *args)
                Ht = curvature(xt, *args)
            st = xt - x
            first = ~jnp.isfinite(f)
            pred = jnp.where(first, 0.0, -(g @ st + 0.5 * st @ (H @ st)))
            ared = jnp.where(first, inf, f - ft)
            finite = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt)) & jnp.all(jnp.isfinite(Ht))
            good_model = (pred > 0) & (ared >= 1e-4 * pred)
            # at machine precision f cannot decrease reliably: accept a step that lowers the projected gradient
            noise = 1e-12 * (1.0 + jnp.abs(f))
            pg_x = _proj_grad_norm(x, g, lo, hi, fixed)
            pg_t = _proj_grad_norm(xt, gt, lo, hi, fixed)
            roundoff_ok = (ared > -noise) & (pg_t < 0.5 * pg_x)
            accept = finite & (((ared > 0) & (good_model | (pred <= 0))) | (~first & roundoff_ok))
            rho = jnp.where(pred > 0, ared / jnp.where(pred > 0, pred, 1.0), 0.0)
            lam_new = jnp.where(accept, jnp.where(rho > 0.75, lam * 0.2, jnp.where(rho < 0.25, lam * 2.0, lam)), lam * 10.0)
            lam_new = jnp.where(first, lam, jnp.clip(lam_new, 1e-12, 1e16))
            x2 = jnp.where(accept, xt, x)
            f2 = jnp.where(accept, ft, f)
            g2 = jnp.where(accept, gt, g)
            H2 = jnp.where(accept, Ht, H)
            pgn = _proj_grad_norm(x2, g2, lo, hi, fixed)
            tiny_step = jnp.max(jnp.abs(st)) <= 1e-14 * (1.0 + jnp.max(jnp.abs(x)))
            stall2 = jnp.where(accept & ~tiny_step, 0, s["stall"] + 1)
            done2 = jnp.isfinite(f2) & ((pgn <= gtol) | ((stall2 >= 4) & (pgn <= 1e3 * gtol)))
            xt2 = propose(x2, g2, H2, lam_new)
            return dict(x=x2, f=f2, g=g2, H=H2, lam=lam_new, xt=xt2, it=s["it"] + 1, done=done2, stall=stall2)

        init = dict(x=x0, f=inf, g=jnp.zeros_like(x0), H=jnp.zeros((P, P), dtype), lam=jnp.asarray(1e-4, dtype), xt=x0,
                    it=jnp.asarray(0), done=jnp.asarray(False), stall=jnp.asarray(0))
        s = lax.while_loop(cond, body, init)
        x, f, g = s["x"], s["f"], s["g"]
        pgn = _proj_grad_norm(x, g, lo, hi, fixed)
        ok = jnp.isfinite(f) & (pgn <= 1e3 * gtol)
        H = s["H"] if curvature is None else (fgh(x, *args)[2] if with_hessian else None)
        return SolveResult(x, f, pgn, s["it"], ok, H)

    @jax.custom_vjp
    def solve(x0, lo, hi, fixed, *args):
        return _run(x0, lo, hi, fixed, *args)

    def fwd(x0, lo, hi, fixed, *args):
        r = _run(x0, lo, hi, fixed, *args)
        return r, (r.x, lo, hi, fixed, args)

    def bwd(res, ct):
        x, lo, hi, fixed, args = res
        vx = ct.x
        _, g, H = fgh(x, *args)
        free = _free_mask(x, g, lo, hi, fixed)
        # components sitting on a bound stay there under small perturbations
        on_bound = (x <= lo) | (x >= hi)
        m = (free & ~on_bound).astype(x.dtype)
        HF = H * m[:, None] * m[None, :] + jnp.eye(x.shape[0], dtype=x.dtype) * (1.0 - m)[:, None]
        w = jnp.linalg.solve(HF, vx * m) * m  # H_FF^{-1} v_F (H symmetric)

        def grad_x(*a):
            return jax.grad(objective)(x, *a)

        _, vjp = jax.vjp(grad_x, *args)
        cargs = vjp(-w)
        # the objective value at the optimum: envelope theorem (d f / d args at fixed x)
        _, vjp_f = jax.vjp(lambda *a: objective(x, *a), *args)
        cf = vjp_f(ct.fun)
        cargs = tuple(a + b for a, b in zip(cargs, cf))
        zeros = jnp.zeros_like(x)
        return (zeros, jnp.zeros_like(lo), jnp.zeros_like(hi), jnp.zeros_like(fixed), *cargs)

    solve.defvjp(fwd, bwd)
    return solve
