"""Closed forms for the single-server queues the lock model must reproduce."""

from math import factorial


def mm1_wq(lam: float, mu: float) -> float:
    """M/M/1 mean wait in queue: rho / (mu - lam)."""
    rho = lam / mu
    return rho / (mu - lam)


def md1_wq(lam: float, mu: float) -> float:
    """M/D/1 mean wait (Pollaczek-Khinchine with zero service variance): rho / (2 mu (1 - rho))."""
    rho = lam / mu
    return rho / (2 * mu * (1 - rho))


def repairman_wq(n: int, lam: float, mu: float) -> float:
    """Finite-source (machine-repairman) M/M/1//N: mean wait in queue.

    n sources each think Exp(lam) then ask for one server with Exp(mu) service.
    P0 = 1 / sum_k n!/(n-k)! (lam/mu)^k; throughput X = mu (1 - P0);
    L = n - X / lam (Little on the thinking sources); W = L / X; Wq = W - 1/mu.
    """
    r = lam / mu
    p0 = 1.0 / sum(factorial(n) / factorial(n - k) * r**k for k in range(n + 1))
    x = mu * (1 - p0)
    L = n - x / lam
    return L / x - 1 / mu


def finite_source_mmc(n: int, c: int, lam: float, mu: float) -> tuple[float, float]:
    """Finite-source M/M/c//N (machine repairman with c servers): (throughput X, mean wait Wq).

    n sources each think Exp(lam) then need one of c servers for Exp(mu). With r = lam/mu,
    p_k is proportional to n!/(n-k)!/k! r^k for k <= c and n!/(n-k)!/(c! c^(k-c)) r^k above;
    X = lam (n - L) (Little on the thinking sources), Wq = Lq / X with Lq = sum (k-c) p_k.
    """
    r = lam / mu
    w = []
    for k in range(n + 1):
        perm = factorial(n) / factorial(n - k)
        w.append(perm * r**k / (factorial(k) if k <= c else factorial(c) * c ** (k - c)))
    total = sum(w)
    p = [x / total for x in w]
    L = sum(k * pk for k, pk in enumerate(p))
    Lq = sum((k - c) * pk for k, pk in enumerate(p) if k > c)
    x = lam * (n - L)
    return x, Lq / x
