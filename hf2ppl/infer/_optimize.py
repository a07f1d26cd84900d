r"""A bounded, globalised Newton minimiser (Levenberg-Marquardt trust region, projected) written in JAX.

The minimiser works on the *full* flat parameter vector with a float mask of fixed components, so a
free fit, a fixed-POI fit and a fit with any other parameter fixed are the *same* compiled function:
bounds, start point and the fixed mask are ordinary (traced) arrays and everything is ``vmap``-able
over them, over datasets and over nominal yields.

One iteration, with :math:`g, H` the exact gradient and Hessian of the objective :math:`f` at :math:`x`:

1. the *active set*: fixed components and components at a bound whose gradient points outward
   (:math:`x_i = l_i, g_i > 0` or :math:`x_i = u_i, g_i < 0`); :math:`F` are the others;
2. the damped Newton step :math:`(H_{FF} + \lambda D_F)\,p_F = -g_F` with Marquardt's scaling
   :math:`D = \mathrm{diag}|H|` (a Cholesky solve; a matrix that is not positive definite raises
   :math:`\lambda`);
3. projection onto the box, :math:`x' = \mathrm{clip}(x + p, l, u)` (a fit at a bound lands *exactly* on it);
4. acceptance on the actual-vs-predicted decrease ratio :math:`\rho`; :math:`\lambda` shrinks after
   good steps and grows after rejected ones (Nielsen's rule), so far from the minimum the steps are
   short gradient-like steps and near it full Newton steps (quadratic convergence).

Stopping rule (Minuit's): the *estimated distance to minimum*
:math:`\mathrm{EDM} = \tfrac12\, g_F^\top H_{FF}^{-1} g_F` with the exact Hessian, in units of the objective
(NLL), below ``tol``. It is invariant under rescaling of the parameters. ``converged`` is True exactly
when this criterion holds at a finite point whose free Hessian is positive definite. ``status``:
``0`` converged, ``1`` iteration cap, ``2`` stalled (no decrease possible at machine precision
with EDM above ``tol``), ``3`` non-finite objective at the start point, ``4`` retired (below).

Multi-start (:func:`make_solver`'s ``solve.multi``): the primary start runs first; the extra starts then run
(one after the other) with the primary's minimum :math:`x^*, f^*, H^*` as a reference. An extra start that can
only end in the primary's basin is retired (``status`` 4, ``converged`` False: it is no candidate minimum): at an
accepted point with a positive definite free Hessian whose last step was predicted well (:math:`\rho \ge 0.75`),
its own Newton target :math:`x_N = \Pi(x - H^{-1}g)` lies within
:math:`\tfrac12 (x_N - x^*)^\top H^* (x_N - x^*) \le` ``retire_tol`` (NLL units) of the primary's minimum and its
predicted minimum value :math:`f - \mathrm{EDM}` is not below :math:`f^* -` ``retire_tol``: both local quadratic
models (the start's and the primary's) put the minimum at the same place and depth, so the remaining iterations
(the quadratic-convergence tail) could only reproduce :math:`x^*`. Starts heading elsewhere, or deeper, run on.

:func:`make_solver` wraps the loop in a ``jax.custom_vjp`` whose backward pass uses the implicit
function theorem at the optimum, :math:`\partial x^*_F/\partial\eta = -H_{FF}^{-1}\,\partial_\eta g_F`
(active components do not move), so gradients of anything computed from the fit never unroll the
iterations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["SolveResult", "make_solver", "STATUS_MESSAGES"]

STATUS_MESSAGES = {
    0: "converged (EDM below tolerance)",
    1: "iteration limit reached before EDM fell below tolerance",
    2: "stalled: no further decrease possible at machine precision, EDM above tolerance",
    3: "objective is not finite at the start point",
    4: "stopped early (extra start of a multi-start fit): its Newton step leads to the primary start's minimum",
}

#: damping (relative to diag|H|) at or below which an iteration takes the undamped Newton step computed with
#: the EDM (no second factorisation): the initial damping, so that steps are damped only once the acceptance
#: test has rejected a Newton step or the Hessian is not positive definite
NEWTON_DAMPING = 1e-3
#: above this many parameters the Hessian is built in blocks of tangents (bounded memory)
_HESS_BLOCK = 64


class SolveResult(NamedTuple):
    """Output of a solver call (all JAX arrays; batched under vmap)."""

    x: object  # (P,) the minimiser
    fun: object  # () objective at x
    grad_norm: object  # () projected-gradient inf-norm at x
    niter: object  # () iterations used
    converged: object  # () bool: EDM < tol
    hessian: object  # (P, P) exact Hessian of the objective at x (not differentiable)
    edm: object  # () estimated distance to minimum at x
    status: object  # () int, see STATUS_MESSAGES


def _free_mask(x, g, lo, hi, fixed):
    at_lo = (x <= lo) & (g > 0)
    at_hi = (x >= hi) & (g < 0)
    return (fixed < 0.5) & ~at_lo & ~at_hi


def _proj_grad_norm(x, g, lo, hi, fixed):
    import jax.numpy as jnp

    pg = x - jnp.clip(x - g, lo, hi)
    pg = jnp.where(fixed > 0.5, 0.0, pg)
    return jnp.max(jnp.abs(pg)) if x.shape[0] else jnp.zeros((), x.dtype)


def _masked_solve(H, g, m, lam):
    """Solve ``(H_FF + lam * D_F) p = -g_F`` on the free components (mask ``m``) by Cholesky.

    Returns ``(p, ok)``; ``ok`` is False when the damped matrix is not positive definite. (LAPACK's factorisation
    without JAX's input symmetrisation, which the matrix does not need: the factorisation reads one triangle;
    positive definiteness read from the factor's diagonal: on failure the factor is all NaN.)
    """
    import jax.numpy as jnp
    from jax import lax

    d = jnp.abs(jnp.diagonal(H))
    scale = jnp.where(d > 1e-300, d, 1.0)
    A = (H * (m[:, None] * m[None, :])).T + jnp.diag(lam * scale * m + (1.0 - m))
    L = lax.linalg.cholesky(A, symmetrize_input=False)
    ok = jnp.all(jnp.isfinite(jnp.diagonal(L)))
    y = lax.linalg.triangular_solve(L, (-g * m)[:, None], left_side=True, lower=True)
    p = lax.linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)[:, 0] * m
    return jnp.where(ok, p, jnp.zeros_like(p)), ok


def make_solver(objective: Callable, *, maxiter: int = 100, tol: float = 1e-9, retire_tol: float = 2.5e-4,
                value_grad_hessian: Callable | None = None) -> Callable:
    """Build ``solve(x0, lo, hi, fixed, *args) -> SolveResult`` minimising ``objective(x, *args)``.

    ``fixed`` is a float mask (1.0 = keep at ``x0``). ``tol`` is the EDM tolerance in units of the
    objective; ``retire_tol`` (same units) the basin tolerance of ``solve.multi``'s extra starts. ``value_grad_hessian``:
    ``value_grad_hessian(x, *args) -> (f, g, H)``, the objective with its exact gradient and Hessian by a cheaper
    route (the model's structure, see :func:`hf2ppl.histfactory.logpdf_value_grad_hessian`); default:
    reverse-mode gradient and forward-over-reverse Hessian by autodiff of ``objective``. ``args`` (data,
    nominal yields...) are differentiable through the custom VJP (implicit
    function theorem); ``x0, lo, hi, fixed`` are not.

    Example:
        >>> import jax.numpy as jnp
        >>> solve = make_solver(lambda x, a: jnp.sum((x - a) ** 2))
        >>> r = solve(jnp.zeros(2), jnp.zeros(2), jnp.ones(2) * 5, jnp.zeros(2), jnp.array([1.0, -1.0]))
        >>> [float(v) for v in r.x], bool(r.converged), int(r.niter)
        ([1.0, 0.0], True, 1)
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    value_and_grad = jax.value_and_grad(objective)

    def fgh(x, *args):
        """Value, gradient and exact Hessian in one trace: forward-mode JVPs of the gradient (blocked for big P)."""

        def gf(y):
            f, g = value_and_grad(y, *args)
            return g, f

        P = x.shape[0]
        if value_grad_hessian is not None:
            return value_grad_hessian(x, *args)
        eye = jnp.eye(P, dtype=x.dtype)
        if P <= _HESS_BLOCK:
            g, H, f = jax.vmap(lambda v: jax.jvp(gf, (x,), (v,), has_aux=True), out_axes=(None, 0, None))(eye)
            return f, g, H
        f, g = value_and_grad(x, *args)
        H = lax.map(lambda v: jax.jvp(lambda y: value_and_grad(y, *args)[1], (x,), (v,))[1], eye, batch_size=_HESS_BLOCK)
        return f, g, H

    def edm_step(x, g, H, lo, hi, fixed):
        """(EDM, Newton step on the free components) at ``x``; EDM inf where the free Hessian is not PD."""
        m = _free_mask(x, g, lo, hi, fixed).astype(x.dtype)
        p, ok = _masked_solve(H, g, m, jnp.asarray(1e-12, x.dtype))
        return jnp.where(ok, jnp.maximum(-0.5 * (g * m) @ p, 0.0), jnp.inf), p

    def in_ref_basin(x, f, e, p, lo, hi, fixed, ref):
        """True where the Newton target of a point (EDM ``e``, Newton step ``p``) is the reference minimum."""
        rx, rf, rH, rok = ref
        xn = jnp.where(fixed > 0.5, x, jnp.clip(x + p, lo, hi))
        d = jnp.where(fixed > 0.5, 0.0, xn - rx)
        dist = 0.5 * d @ (rH @ d)
        return rok & jnp.isfinite(e) & jnp.isfinite(dist) & (dist <= retire_tol) & (f - e >= rf - retire_tol)

    def _run(x0, lo, hi, fixed, *args, cap=None, ref=None):
        limit = maxiter if cap is None else jnp.minimum(maxiter, cap)
        x0 = jnp.where(fixed > 0.5, x0, jnp.clip(x0, lo, hi))  # fixed values may sit outside the bounds
        dtype = x0.dtype
        f0, g0, H0 = fgh(x0, *args)
        finite0 = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0)) & jnp.all(jnp.isfinite(H0))
        g0 = jnp.where(finite0, g0, 0.0)
        H0 = jnp.where(finite0, H0, 0.0)
        e0, p0 = edm_step(x0, g0, H0, lo, hi, fixed)
        e0 = jnp.where(finite0, e0, jnp.inf)

        def cond(s):
            return (s["status"] < 0) & (s["it"] < limit)

        def body(s):
            x, f, g, H, lam, nu, e = s["x"], s["f"], s["g"], s["H"], s["lam"], s["nu"], s["edm"]
            m = _free_mask(x, g, lo, hi, fixed).astype(dtype)
            # raise the damping until the damped matrix is positive definite *before* spending an evaluation of
            # f, g, H on a trial point (factorisations are cheap; an indefinite Hessian far from the minimum
            # otherwise costs one wasted evaluation per doubling of lambda)
            # below NEWTON_DAMPING the damping is negligible: the undamped Newton step of the EDM computation at x
            # (same free set) is the step, and the iteration needs one factorisation instead of two
            def pd_cond(c):
                return ~c[2] & (c[0] < 1e20)

            def pd_body(c):
                lam_c = jnp.where(c[3], c[0], jnp.minimum(c[0] * 10.0, 1e20))
                p_c, ok_c = _masked_solve(H, g, m, lam_c)
                return lam_c, p_c, ok_c, jnp.asarray(False)

            newton = (lam <= NEWTON_DAMPING) & jnp.isfinite(e)
            lam, p, ok, _ = lax.while_loop(pd_cond, pd_body, (lam, s["pN"], newton, jnp.asarray(True)))
            # a lane of a vmapped batch that is already done evaluates at its own point (no wasted work on a wild
            # trial point, where products of extreme factors run into slow subnormal arithmetic)
            active = (s["status"] < 0) & (s["it"] < limit)
            xt = jnp.where((fixed > 0.5) | ~active, x, jnp.clip(x + p, lo, hi))
            st = xt - x
            ft, gt, Ht = fgh(xt, *args)
            finite = ok & jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt)) & jnp.all(jnp.isfinite(Ht))
            et, pt = edm_step(xt, jnp.where(finite, gt, 0.0), jnp.where(finite, Ht, 0.0), lo, hi, fixed)
            et = jnp.where(finite, et, jnp.inf)
            pred = -(g @ st + 0.5 * st @ (H @ st))
            ared = f - ft
            noise = 1e-13 * (1.0 + jnp.abs(f))
            rho = jnp.where(pred > 0, ared / jnp.where(pred > 0, pred, 1.0), 0.0)
            descent = (ared > 0) & ((pred <= 0) | (rho > 1e-4))
            # at machine precision f cannot decrease reliably: accept a step that does not raise f and lowers the EDM
            roundoff = (jnp.abs(ared) <= noise) & (et < e)
            accept = active & finite & (descent | roundoff)
            # Nielsen's damping update
            lam_acc = lam * jnp.maximum(0.1, 1.0 - (2.0 * jnp.clip(rho, 0.0, 1.0) - 1.0) ** 3)
            # a rejected step: at least Nielsen's lam * nu, and enough damping to shorten the step to the minimum
            # t* of the parabola through f, the slope g.s and f(x + s) (steps shrink about as 1 / (1 + lam));
            # a non-finite trial point: ten times more
            gs = g @ st
            curv = ft - f - gs
            tstar = jnp.clip(jnp.where(finite & (gs < 0) & (curv > 0), -gs / (2.0 * jnp.where(curv > 0, curv, 1.0)), 0.1), 0.05, 0.5)
            lam_rej = jnp.where(finite, jnp.maximum(lam * nu, (1.0 + lam) / tstar - 1.0), lam * nu * 10.0)
            lam2 = jnp.clip(jnp.where(accept, lam_acc, lam_rej), 1e-15, 1e20)
            nu2 = jnp.where(accept, 2.0, nu * 2.0)
            x2 = jnp.where(accept, xt, x)
            f2 = jnp.where(accept, ft, f)
            g2 = jnp.where(accept, gt, g)
            H2 = jnp.where(accept, Ht, H)
            e2 = jnp.where(accept, et, e)
            pN2 = jnp.where(accept, pt, s["pN"])
            stall2 = jnp.where(accept & (jnp.abs(ared) > noise), 0, s["stall"] + 1)
            status = jnp.where(e2 < tol, 0, jnp.where((stall2 >= 8) | (lam2 >= 1e20), 2, -1))
            if ref is not None:  # an extra start whose Newton target is the primary's minimum: retired
                retire = accept & (rho >= 0.75) & in_ref_basin(xt, ft, et, pt, lo, hi, fixed, ref)
                status = jnp.where((status < 0) & retire, 4, status)
            status = jnp.where(active, status, s["status"])
            return dict(x=x2, f=f2, g=g2, H=H2, lam=jnp.where(active, lam2, lam), nu=jnp.where(active, nu2, nu), edm=e2,
                        it=s["it"] + active.astype(s["it"].dtype), status=status, stall=stall2, pN=pN2)

        status0 = jnp.where(~finite0, 3, jnp.where(e0 < tol, 0, -1))
        if ref is not None:
            status0 = jnp.where((status0 < 0) & in_ref_basin(x0, f0, e0, p0, lo, hi, fixed, ref), 4, status0)
        init = dict(x=x0, f=f0, g=g0, H=H0, lam=jnp.asarray(1e-3, dtype), nu=jnp.asarray(2.0, dtype), edm=e0,
                    it=jnp.asarray(0), status=status0, stall=jnp.asarray(0), pN=p0)
        s = lax.while_loop(cond, body, init)
        status = jnp.where(s["status"] < 0, 1, s["status"])
        x, f, g = s["x"], s["f"], s["g"]
        pgn = _proj_grad_norm(x, g, lo, hi, fixed)
        ok = (status == 0) & jnp.isfinite(f)
        return SolveResult(x, f, pgn, s["it"], ok, s["H"], s["edm"], status)

    @jax.custom_vjp
    def solve(x0, lo, hi, fixed, *args):
        return _run(x0, lo, hi, fixed, *args)

    def fwd(x0, lo, hi, fixed, *args):
        r = _run(x0, lo, hi, fixed, *args)
        return r, (r.x, r.hessian, lo, hi, fixed, args)

    def bwd(res, ct):
        x, H, lo, hi, fixed, args = res
        vx = ct.x
        g = jax.grad(objective)(x, *args)
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
        cargs = tuple(jax.tree.map(jnp.add, a, b) for a, b in zip(cargs, cf))  # args may be pytrees (a values dict)
        zeros = jnp.zeros_like(x)
        return (zeros, jnp.zeros_like(lo), jnp.zeros_like(hi), jnp.zeros_like(fixed), *cargs)

    solve.defvjp(fwd, bwd)
    # batched fits that need no derivatives may cap the iterations per problem (e.g. extra starts of a
    # multi-start fit): ``solve.capped(x0, lo, hi, fixed, cap, *args)``
    solve.capped = lambda x0, lo, hi, fixed, cap, *args: _run(x0, lo, hi, fixed, *args, cap=cap)

    def multi(X0s, lo, hi, fixed, caps, *args):
        """Multi-start: ``X0s`` (k, P) start points, ``caps`` (k,) iteration caps; row 0 is the primary start, run
        first; rows 1.. then run one after the other with the primary's minimum as the reference of the retirement
        rule (module docstring). Returns a :class:`SolveResult` with leading axis k (no derivatives). One
        ``lax.scan`` over the starts: the solver is traced and compiled once. A cap of 0 makes a start a padding
        row (NLL inf, status 1) that costs nothing where the problems are not vmapped. Sequential starts each stop
        at their own iteration count (vmapped lockstep lanes all run as long as the slowest one)."""
        P = X0s.shape[1]
        dtype = X0s.dtype
        ref0 = (jnp.zeros((P,), dtype), jnp.asarray(jnp.inf, dtype), jnp.zeros((P, P), dtype), jnp.asarray(False))

        def step(ref, a):
            x0, c, j = a

            def run():
                return _run(x0, lo, hi, fixed, *args, cap=c, ref=ref)

            def skip():  # a padding start (cap 0): no evaluation at all where the cond is not batched (lax.map)
                inf, zero, i0 = jnp.asarray(jnp.inf, dtype), jnp.zeros((), dtype), jnp.asarray(0)
                return SolveResult(x0, inf, zero, i0, jnp.asarray(False), jnp.zeros((P, P), dtype), inf, i0 + 1)

            r = lax.cond(c > 0, run, skip)
            new = (r.x, r.fun, r.hessian, r.converged)
            return jax.tree.map(lambda n, o: jnp.where(j == 0, n, o), new, ref), r

        _, rs = lax.scan(step, ref0, (X0s, caps, jnp.arange(X0s.shape[0])))
        return rs

    solve.multi = multi
    return solve


@functools.lru_cache(maxsize=1)
def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere), read once:
    the host threads of the sampler's parallel chains and of the frequentist engine's independent fits."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def one_blas_thread():
    """A context in which numpy's BLAS/LAPACK runs single-threaded. After JAX has run, XLA's CPU threads and
    OpenBLAS's worker threads contend for the cores: a 120x120 ``np.linalg.inv`` took 50-150 ms instead of
    0.5 ms on the 2-core machine (most of a warm staus fit). (threadpoolctl: a dependency of hf2ppl.) Used by the frequentist covariance and ``map_estimate``."""
    global _BLAS_CTL
    try:
        if _BLAS_CTL is None:
            from threadpoolctl import ThreadpoolController

            _BLAS_CTL = ThreadpoolController()
        return _BLAS_CTL.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing or unable to see the BLAS
        import contextlib

        return contextlib.nullcontext()


_BLAS_CTL = None
