"""The Pareto front of candidates scored on several objectives, and its plot (an
architecture search's accuracy against MACs, see `kcnn tune`)."""

import matplotlib.pyplot as plt
import numpy as np

DIRECTIONS = ("maximize", "minimize")


def pareto_front(values, directions):
    """Indices of the non-dominated rows of `values`, in row order.

    Row `a` dominates row `b` when it is at least as good in every objective and better in
    one (the usual definition, e.g. Deb et al. 2002, "A fast and elitist multiobjective
    genetic algorithm: NSGA-II"). Equal rows do not dominate each other, so both are kept.

    Args:
        values: array-like of shape `(n, k)`, one row per candidate.
        directions: sequence of k strings, `"maximize"` or `"minimize"`.

    Returns:
        A list of row indices.

    Raises:
        ValueError: if `directions` does not give one valid direction per column.

    Example:
    >>> pareto_front([[0.9, 5], [0.8, 2], [0.7, 3]], ["maximize", "minimize"])
    [0, 1]
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    directions = list(directions)
    if len(directions) != values.shape[1] or any(d not in DIRECTIONS for d in directions):
        raise ValueError(
            f"`directions` must give one of {list(DIRECTIONS)} per objective "
            f"({values.shape[1]}). Received: directions={directions}"
        )
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    costs = values * signs  # smaller is better in every column
    front = []
    for index, row in enumerate(costs):
        dominated = np.any(np.all(costs <= row, axis=1) & np.any(costs < row, axis=1))
        if not dominated:
            front.append(index)
    return front


def plot_pareto_front(
    x,
    y,
    x_direction="minimize",
    y_direction="maximize",
    x_label="MACs",
    y_label="validation accuracy",
    labels=None,
    baseline=None,
    title=None,
):
    """Each candidate as a point, the Pareto front of the two objectives drawn as a step
    line and its points ringed, the baseline marked with a star.

    Args:
        x: sequence of floats, the first objective (e.g. MACs).
        y: sequence of floats, the second objective (e.g. validation accuracy).
        x_direction: `"maximize"` or `"minimize"`. Defaults to `"minimize"`.
        y_direction: `"maximize"` or `"minimize"`. Defaults to `"maximize"`.
        x_label: str. Defaults to `"MACs"`.
        y_label: str. Defaults to `"validation accuracy"`.
        labels: None or a sequence of str (e.g. trial numbers) written beside the front's
            points. Defaults to None.
        baseline: None or the index of the baseline candidate. Defaults to None.
        title: None or str.

    Returns:
        A matplotlib `Figure`.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    figure, axes = plt.subplots(figsize=(7, 5))
    axes.scatter(x, y, s=25, color="tab:blue", alpha=0.6, label="trial")
    if len(x):
        front = pareto_front(np.stack([x, y], axis=1), [x_direction, y_direction])
        order = sorted(front, key=lambda index: x[index])
        axes.step(
            x[order], y[order], where="post", color="tab:red", linewidth=1.5, label="Pareto front"
        )
        axes.scatter(x[order], y[order], s=70, facecolors="none", edgecolors="tab:red")
        if labels is not None:
            for index in order:
                axes.annotate(
                    str(labels[index]),
                    (x[index], y[index]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    if baseline is not None:
        axes.scatter(
            [x[baseline]], [y[baseline]], marker="*", s=250, color="tab:orange", label="baseline"
        )
    axes.set_xlabel(x_label + ("" if x_direction == "minimize" else " (higher is better)"))
    axes.set_ylabel(y_label + ("" if y_direction == "maximize" else " (lower is better)"))
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return figure
