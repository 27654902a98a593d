import argparse

import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps 2-core CI machines responsive

DIMS = dict(audio_dim=12, text_dim=20, video_dim=8)
# V2 with no random draw anywhere in a training step (recon_mode subset draws its dimensions per step), so that
# two ways of training it (stacked folds or seeds, and one at a time) can be compared step for step
DETERMINISTIC_V2 = dict(dropout=0.0, use_modality_dropout=False, use_vae=False, corrupt_aug=0.0, recon_mode="full")
DETERMINISTIC_FLAGS = ["--dropout", "0", "--no_vae", "--no_modality_dropout", "--corrupt_aug", "0", "--recon_mode", "full"]


def model_args(feat_type="utt", **overrides):
    args = dict(DIMS, output_dim1=6, output_dim2=1, feat_type=feat_type, hidden_dim=16, dropout=0.1, grad_clip=-1)
    args.update(overrides)
    return argparse.Namespace(**args)


def random_batch(batch=6, feat_type="utt", seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda d: (batch, d)) if feat_type == "utt" else (lambda d: (batch, seq, d))
    return {"audios": torch.randn(*shape(DIMS["audio_dim"]), generator=g),
            "texts": torch.randn(*shape(DIMS["text_dim"]), generator=g),
            "videos": torch.randn(*shape(DIMS["video_dim"]), generator=g)}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic MER2023-shaped set (utt + frames) in MERBench's layout."""
    from merbench_plugins.data.synthetic import generate
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), n_train=60, n_test=24, dims=(12, 20, 8), seed=0)
    return root
