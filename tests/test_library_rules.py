"""Rules that ``ddm``'s subcommands used to hold live in the library functions they guard, where a
notebook user meets them too, as one-line InputErrors raised before any work (the sample set's
rules: tests/test_sampleset.py)."""

from __future__ import annotations

import pytest
import torch

from ddm.io import InputError


def test_convergence_needs_snapshots(tmp_path):
    from ddm.generate import convergence_rows

    for snapshots in (None, []):
        with pytest.raises(InputError, match="holds no snapshots to score: list its method under the preset's "
                                             "`convergence: methods`"):
            convergence_rows(None, None, snapshots, [2], 4, tmp_path / "ref.npz", "digits-classifier", None)


def test_a_figure_refuses_what_it_cannot_draw(tmp_path):
    from ddm.report.figures import fid_plot, task_figure

    with pytest.raises(InputError, match=r"no dataset 'cifar10' in the metrics \(they have: digits\): pick one"):
        fid_plot({"datasets": {"digits": {}}}, "cifar10", tmp_path / "f.png")
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(InputError, match="2 sample files but 1 labels: give one label per file"):
        task_figure({"image_uint8": x}, [x, x], ["ddm"], tmp_path / "t.png")
    assert not list(tmp_path.iterdir())
