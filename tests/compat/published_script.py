"""A forgetting script in the style of the published SSD repository's strategy files.

It was written against `ssd.ParameterPerturber` from
github.com/if-loops/selective-synaptic-dampening; the only change for ssd_fast is the
import line below. tests/compat/test_compat.py runs it and checks the result against
ssd_fast.reference. Run it directly for a tiny self-contained demo.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

from ssd_fast.compat import ParameterPerturber  # was: from ssd import ParameterPerturber


def ssd_tuning(model, forget_train_dl, dampening_constant, selection_weighting, full_train_dl, device):
    """Forget with SSD the published way: parameters dict, perturber, eval, two importances, modify."""
    parameters = {
        "lower_bound": 1,  # bound on the dampening factor
        "exponent": 1,
        "magnitude_diff": None,
        "min_layer": -1,
        "max_layer": -1,
        "forget_threshold": 1,
        "dampening_constant": dampening_constant,  # lambda
        "selection_weighting": selection_weighting,  # alpha
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pdr = ParameterPerturber(model, optimizer, device, parameters)
    model = model.eval()
    sample_importances = pdr.calc_importance(forget_train_dl)
    original_importances = pdr.calc_importance(full_train_dl)
    pdr.modify_weight(original_importances, sample_importances)
    return model


def _demo():
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    y = torch.randint(0, 4, (64,))
    coarse = torch.zeros_like(y)  # the published datasets yield (x, coarse label, fine label)
    full_dl = DataLoader(TensorDataset(x, coarse, y), batch_size=16)
    forget_dl = DataLoader(TensorDataset(x[y == 0], coarse[y == 0], y[y == 0]), batch_size=16)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    ssd_tuning(model, forget_dl, 1, 10, full_dl, "cpu")
    print("dampened:", model)


if __name__ == "__main__":
    _demo()
