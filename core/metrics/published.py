"""The papers' published numbers that attrex's measurements are set beside (../shared/METHODS.md).

Data only. Method names are attrex's registry names; where a paper's row maps to one, the
mapping is stated next to it. Used by ``benchmarks/report.py`` and the app's Evaluate page.
"""

# DualView paper (Yolcu et al. 2024), Table 2, MNIST with a small CNN: identical class, identical subclass,
# label poisoning, domain mismatch. Its rows: DV = dualview, IF = influence, RPS = representer, SIM (cosine of
# gradients, its similarity baseline) = gradcos. SIM-rp (SIM on random projections) has no row here.
DUALVIEW_MNIST = {"dualview": (.979, .663, .709, .758), "influence": (.107, .096, .991, .000),
                  "representer": (.763, .300, .499, 1.000), "gradcos": (.979, .975, .030, .977)}
DUALVIEW_TASKS = ("identical-class", "identical-subclass", "label-poisoning", "domain-mismatch")
# CIFAR-10 (ResNet-18): the paper's table has SIM-rp (cosine of randomly projected gradients, as attrex's gradcos
# by default) and random rows, and no SIM row.
DUALVIEW_CIFAR10 = {"dualview": (.868, .486, .826, .430), "influence": (.835, .480, .907, .000),
                    "representer": (.614, .358, .532, .597), "gradcos": (.868, .841, .276, .500),
                    "random": (.100, .100, .500, .030)}

# Integrated Influence paper: Table 3, mislabel AUROC (MNIST MLP 128-64-10, 1,000 training points, 10% flipped),
# and Table 2, LDS (MNIST MLP, 5,000 training points).
IIF_MISLABEL = {"influence": .869, "tracin": .853, "trak": .866, "integrated-influence": .885}
IIF_LDS = {"influence": .1035, "tracin": .1379, "trak": .1115, "integrated-influence": .1635}
# Integrated Influence paper, Table 1: LDS on synthetic linear regression (100 training points, 10 features, 100
# trials) at the noise levels (sigma_n of the training targets, sigma_s of the test targets) of IIF_LINEAR_NOISE.
IIF_LINEAR_NOISE = ((0.1, 1.0), (1.0, 1.0), (1.0, 0.1))
IIF_LINEAR = {"integrated-influence": (.859, .744, .768), "influence": (.856, .634, .423), "tracin": (.815, .607, .405)}

# dattri's benchmark, MNIST MLP LDS, read off its charts (+-0.02): TRAK-50, IF-CG, TracIn, RPS.
DATTRI_LDS = {"trak": .45, "influence": .26, "tracin": .15, "representer": .09}


def paper_value(dataset: str, task: str, method: str) -> tuple[float, str] | None:
    """The published number for ``method`` on ``task`` in the setting closest to ``dataset``, with its source."""
    if dataset == "mnist" and task in DUALVIEW_TASKS and method in DUALVIEW_MNIST:
        return DUALVIEW_MNIST[method][DUALVIEW_TASKS.index(task)], "DualView Table 2 (MNIST CNN)"
    if dataset == "cifar10" and task in DUALVIEW_TASKS and method in DUALVIEW_CIFAR10:
        return DUALVIEW_CIFAR10[method][DUALVIEW_TASKS.index(task)], "DualView Table 2 (CIFAR-10 ResNet-18)"
    if dataset == "mnist" and task == "mislabel" and method in IIF_MISLABEL:
        return IIF_MISLABEL[method], "IIF Table 3 (MNIST MLP, 1,000 points)"
    if dataset == "mnist" and task == "lds" and method in IIF_LDS:
        return IIF_LDS[method], "IIF Table 2 (MNIST MLP)"
    return None
