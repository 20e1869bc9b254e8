"""Figures of a loss-surface result (reads a
:class:`~deepscope.landscape.result_surface.SurfaceResult`; computes nothing).

- :func:`plot_line`: loss (and accuracy) along a 1-D line ``theta + a*d1``;
- :func:`plot_contour`: contour lines of a 2-D plane, the center marked, with the projected
  training trajectory when the directions came from a PCA of it (Li et al. 2018, fig. 9);
- :func:`plot_surface3d`: the plane as a 3-D surface;
- :func:`plot_trajectory`: the projected trajectory on the plane, with explained variances;
- :func:`surface_figures`: the figures that fit a result; :func:`surface_section`: the demo
  report section (a 1-D line and a small 2-D contour of the demo's model).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_line", "plot_contour", "plot_surface3d", "plot_trajectory",
           "surface_figures", "surface_section"]


def _log_levels(z: np.ndarray, n: int = 20) -> np.ndarray:
    finite = z[np.isfinite(z)]
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.array([lo, lo + 1e-12])
    if lo > 0:
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def plot_line(result, *, accuracy: bool = True) -> Figure:
    """Loss along the line (left axis) and accuracy (right axis, when defined)."""
    if result.dims != 1:
        raise ValueError("plot_line needs a 1-D surface result (dims=1)")
    a, _ = result.axes()
    loss, acc = result.grid("loss"), result.grid("accuracy")
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot(111)
    ax.plot(a, loss, "-o", ms=3, color="#1f77b4", label="loss")
    ax.axvline(0.0, color="#888", ls=":", lw=1)
    ax.set_xlabel("a  (θ + a·d₁)")
    ax.set_ylabel(f"{result.summary.get('split', 'train')} loss", color="#1f77b4")
    if accuracy and np.isfinite(acc).any():
        ax2 = ax.twinx()
        ax2.plot(a, acc, "-", color="#d62728", lw=1.2, label="accuracy")
        ax2.set_ylabel("accuracy", color="#d62728")
        ax2.set_ylim(-0.02, 1.02)
    ax.set_title(f"1-D slice ({result.summary.get('directions')} direction)")
    fig.tight_layout()
    return fig


def _draw_trajectory(ax, result) -> None:
    c = result.trajectory_coords
    if c is None or c.ndim != 2 or c.shape[1] < 2:
        return
    ax.plot(c[:, 0], c[:, 1], "-o", ms=3, color="#d62728", lw=1.2, label="trajectory")
    ax.plot(c[0, 0], c[0, 1], "s", color="#d62728", ms=6)
    ax.legend(loc="best", fontsize=8)


def plot_contour(result, *, column: str = "loss", trajectory: bool = True) -> Figure:
    """Contour plot of a 2-D plane (log-spaced levels for a positive loss)."""
    if result.dims != 2:
        raise ValueError("plot_contour needs a 2-D surface result (dims=2)")
    a, b = result.axes()
    z = result.grid(column)
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot(111)
    A, B = np.meshgrid(a, b, indexing="ij")
    zm = np.ma.masked_invalid(z)
    cs = ax.contour(A, B, zm, levels=_log_levels(z), cmap="viridis", linewidths=1)
    ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
    ax.plot(0.0, 0.0, "k*", ms=9, label="θ")
    if trajectory:
        _draw_trajectory(ax, result)
    ax.set_xlabel("a  (direction 1)")
    ax.set_ylabel("b  (direction 2)")
    ax.set_title(f"{column}: 2-D slice ({result.summary.get('directions')} directions)")
    ax.set_aspect("auto")
    fig.tight_layout()
    return fig


def plot_surface3d(result, *, column: str = "loss") -> Figure:
    """The plane as a 3-D surface (``mpl_toolkits.mplot3d``)."""
    if result.dims != 2:
        raise ValueError("plot_surface3d needs a 2-D surface result (dims=2)")
    import mpl_toolkits.mplot3d  # noqa: F401 - registers the '3d' projection
    a, b = result.axes()
    z = result.grid(column)
    fig = Figure(figsize=(6, 4.8))
    ax = fig.add_subplot(111, projection="3d")
    A, B = np.meshgrid(a, b, indexing="ij")
    ax.plot_surface(A, B, np.ma.masked_invalid(z), cmap="viridis", linewidth=0,
                    antialiased=True, alpha=0.95)
    ax.set_xlabel("a")
    ax.set_ylabel("b")
    ax.set_zlabel(column)
    ax.set_title(f"{column} surface")
    return fig


def plot_trajectory(result) -> Figure:
    """The training trajectory projected on the plane of its top-2 PCA directions."""
    c = result.trajectory_coords
    if c is None:
        raise ValueError("the result has no trajectory (directions were not pca-trajectory)")
    fig = plot_contour(result, trajectory=True) if result.dims == 2 else Figure(figsize=(5, 4))
    ax = fig.axes[0] if fig.axes else fig.add_subplot(111)
    ratio = result.summary.get("explained_variance_ratio") or []
    if len(ratio) >= 1:
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of the variance)")
    if len(ratio) >= 2:
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of the variance)")
    if result.dims == 1:
        ax.plot(c[:, 0], np.zeros(len(c)), "-o", color="#d62728")
    ax.set_title("training trajectory on the PCA plane")
    return fig


def surface_figures(result) -> list[tuple[str, Figure]]:
    """(caption, figure) pairs that fit the result: a line, or contour + 3-D (+ trajectory)."""
    if result.dims == 1:
        return [("loss along a 1-D slice", plot_line(result))]
    out = [("loss contours on a 2-D slice", plot_contour(result)),
           ("loss surface", plot_surface3d(result))]
    if result.trajectory_coords is not None:
        out.append(("training trajectory on the PCA plane", plot_trajectory(result)))
    return out


def surface_section(ctx):
    """Demo section: a 1-D line (41 points) and an 11x11 contour of the demo's model along
    filter-normalized directions, on 512 training samples."""
    from deepscope.landscape.surface import surface
    from deepscope.report.html import Section
    line = surface(ctx.model, ctx.dataset, dims=1, steps=41, span=1.0, max_samples=512,
                   seed=ctx.seed, progress=ctx.progress)
    plane = surface(ctx.model, ctx.dataset, dims=2, steps=11, span=1.0, max_samples=512,
                    seed=ctx.seed, progress=ctx.progress)
    s1, s2 = line.summary, plane.summary
    text = ("Random-direction slices of the training loss (Li et al., NeurIPS 2018): "
            "L(θ + a·d₁ + b·d₂) with Gaussian directions rescaled filter by filter to the "
            "norms of the model's filters (biases left fixed), on 512 training samples. "
            "Sharp minima rise steeply within |a| < 1; flat ones stay low across the plot.")
    summary = {"center loss": s1["center_loss"], "line max loss (|a| <= 1)": s1["max_loss"],
               "plane min loss": s2["min_loss"], "plane max loss": s2["max_loss"],
               "direction cosine": s2["direction_cosine"], "evaluation": s2["evaluation"],
               "time (s)": s1["time_s"] + s2["time_s"]}
    return Section("Loss surface (filter-normalized slices)", text=text, summary=summary,
                   tables=[("1-D line", line.table[["a", "loss", "accuracy"]])],
                   figures=[("loss along a 1-D slice", plot_line(line)),
                            ("loss contours on an 11x11 plane", plot_contour(plane))])
