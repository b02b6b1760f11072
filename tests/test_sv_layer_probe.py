"""tools/sv_layer_probe.py: one EER per encoder stack plus the output, on the tiny recipe's test and dev trials."""

import numpy as np
import torch
from lhotse import CutSet

from conftest import REPO, load_script
from mt2kd_lib.data import contract
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.metrics.verification import compute_eer, cosine_scores
from mt2kd_lib.models.factory import build_student, complete_model_config, load_model_config, select_tasks
from mt2kd_lib.training.trainer import fix_random_seed

probe = load_script("tools/sv_layer_probe.py")


def test_one_eer_per_stack_and_the_output_matches_pooling_by_hand(tiny_recipe):
    data = tiny_recipe["data"]
    cfg = select_tasks(load_model_config(REPO / "egs/mini/conf/student_tiny.yaml"), ["sv"])
    fix_random_seed(3)
    model = build_student(complete_model_config(cfg, speakers=["a", "b"])).eval()
    for split, trials_name in (("test", "O"), ("dev", "dev")):
        cuts = CutSet.from_file(fbank_cuts_path(data / "fbank", "sv", split))
        trials = contract.read_trials(contract.trials_path(data / "manifests", trials_name))
        vectors = probe.pooled_layer_vectors(model, cuts)
        eers = probe.layer_eers(vectors, trials)
        assert len(eers) == len(model.encoder.stack_dims) + 1 and all(0 <= e <= 100 for e in eers)
        # The last entry is the encoder output, pooled here without the tool.
        by_hand = {}
        with torch.no_grad():
            for c in cuts:
                feats = torch.from_numpy(c.load_features()).unsqueeze(0)
                out, lens = model.encoder(feats, torch.tensor([feats.shape[1]]))
                v = out[0, : int(lens[0])]
                by_hand[c.id] = torch.cat([v.mean(0), v.std(0)]).numpy()
        labels = np.array([t[0] for t in trials])
        expected = 100 * compute_eer(cosine_scores(by_hand, trials), labels)[0]
        assert abs(eers[-1] - expected) < 1e-6
