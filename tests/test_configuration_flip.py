"""FlipConfig: defaults, validation and save/load round trip."""

import pytest
from transformers import AutoConfig, BertConfig

from modeling_flip import FIELD_MASK_ID, FIELD_OOV_ID, FlipConfig


def test_reserved_ids_and_defaults():
    config = FlipConfig()
    assert (FIELD_MASK_ID, FIELD_OOV_ID) == (0, 1)
    assert isinstance(config.text_config, BertConfig)
    assert config.mlp_hidden_sizes == [300, 300, 128]
    assert (config.backbone, config.ctr_mode, config.mtm_loss, config.temperature) == ("dcnv2", "joint", "nce", 0.7)
    assert config.num_features == sum(config.field_vocab_sizes)


def test_list_defaults_are_not_shared():
    first, second = FlipConfig(), FlipConfig()
    first.mlp_hidden_sizes.append(7)
    assert second.mlp_hidden_sizes == [300, 300, 128]


def test_offsets_follow_vocab_sizes():
    config = FlipConfig(field_names=["a", "b", "c"], field_vocab_sizes=[5, 3, 9])
    assert config.field_offsets == [0, 5, 8]
    assert config.num_features == 17


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "xdeepfm"}, "xdeepfm"),
        ({"ctr_mode": "both"}, "both"),
        ({"mtm_loss": "full"}, "full"),
        ({"text_pooling": "max"}, "max"),
        ({"field_names": [], "field_vocab_sizes": []}, "field_names must not be empty"),
        ({"field_names": ["a", "a"], "field_vocab_sizes": [4, 4]}, "unique"),
        ({"field_names": ["a", "b"], "field_vocab_sizes": [4]}, r"\[4\]"),
        ({"field_names": ["a"], "field_vocab_sizes": [2]}, r"\[2\]"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "-1.0"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"mlp_hidden_sizes": []}, "mlp_hidden_sizes"),
        ({"backbone": "autoint", "embedding_dim": 5, "autoint_heads": 2}, "autoint_heads=2"),
        ({"mlm_weight": -0.5}, "mlm_weight"),
        ({"use_icl": False, "use_mlm": False, "use_mtm": False}, "all pretraining losses are off"),
    ],
)
def test_invalid_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlipConfig(**kwargs)


def test_round_trip(tmp_path, tiny_text_config):
    import modeling_flip  # noqa: F401  (registers "flip" with AutoConfig)

    config = FlipConfig(
        text_config=tiny_text_config,
        field_names=["user", "item", "genre"],
        field_vocab_sizes=[7, 9, 4],
        mlp_hidden_sizes=[16, 8],
        backbone="autoint",
        embedding_dim=8,
        mtm_loss="softmax",
        ctr_mode="id",
        learn_temperature=True,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FlipConfig)
    assert loaded.field_names == ["user", "item", "genre"]
    assert loaded.field_vocab_sizes == [7, 9, 4]
    assert loaded.mlp_hidden_sizes == [16, 8]
    assert loaded.text_config.hidden_size == tiny_text_config.hidden_size
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_text_config_is_copied(tiny_text_config):
    config = FlipConfig(text_config=tiny_text_config)
    assert config.text_config is not tiny_text_config
    assert config.text_config.to_dict() == tiny_text_config.to_dict()
