"""Which way each metric improves: shared by the console summary and the sweep tables."""

# Prefixes of the metrics where higher is better (pose AUC / RRA / RTA, depth δ, normal consistency, correlations);
# every other metric (errors, distances, costs) is better lower.
HIGHER_IS_BETTER = ("auc", "rra", "rta", "delta", "nc", "pearson", "spearman")


def higher_is_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER)
