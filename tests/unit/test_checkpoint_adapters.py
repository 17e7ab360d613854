"""peft LoRA adapters in model folders (histosynth.generators.checkpoint): two named adapters on a tiny diffusers UNet
are saved beside its base weights, load back as they were, and the base folder still loads into a plain UNet."""

import copy
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from peft.functional import set_adapter
from safetensors import safe_open

from histosynth.generators.base import CheckpointError, weights_hash
from histosynth.generators.checkpoint import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ADAPTERS_DIR,
    BASE_WEIGHTS,
    MODEL_INDEX,
    adapter_names,
    load_component,
    save_component,
    write_model_index,
)
from histosynth.generators.diffusion.backbones import build_unet
from histosynth.generators.htd.presets import PRESETS

ADAPTERS = ("completion", "synthesis")
TARGETS = ["conv1", "conv2", "time_emb_proj"]  # the tiny UNet has no attention: LoRA on its ResNet convs and linears
# peft warns whenever a second adapter is injected into one model; two adapters are what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")


def forward(unet: UNet2DConditionModel, adapter: str | None = None) -> torch.Tensor:
    """The UNet's output on fixed inputs, with `adapter` active (when given)."""
    if adapter is not None:
        set_adapter(unet, adapter)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    context = torch.zeros(2, 1, unet.config.cross_attention_dim)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=context).sample


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A tiny HTD UNet with two LoRA adapters of different random weights, saved as the `unet` component of a folder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = build_unet(PRESETS["tiny"]().model, 3).eval()
    unet = copy.deepcopy(base)
    for name in ADAPTERS:
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS), unet, adapter_name=name)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, param in unet.named_parameters():
            if ".lora_" in key:  # peft starts B at zero (an adapter that changes nothing): make each one differ
                param.copy_(0.2 * torch.randn(param.shape, generator=g))
    folder = tmp_path_factory.mktemp("adapters") / "model"
    save_component(unet, folder / "unet")
    write_model_index(folder, "test", {"unet": unet})
    return base, unet, folder


def test_each_adapter_is_saved_in_its_own_folder_beside_clean_base_weights(adapted):
    base, unet, folder = adapted
    assert adapter_names(unet) == list(ADAPTERS)
    for name in ADAPTERS:
        assert (folder / "unet" / ADAPTERS_DIR / name / ADAPTER_CONFIG).is_file()
        assert (folder / "unet" / ADAPTERS_DIR / name / ADAPTER_WEIGHTS).is_file()
    assert json.loads((folder / MODEL_INDEX).read_text())["_adapters"] == {"unet": list(ADAPTERS)}
    with safe_open(str(folder / "unet" / BASE_WEIGHTS), framework="pt") as saved:
        assert set(saved.keys()) == set(base.state_dict())  # no lora_ tensors, no peft base_layer names
        assert all(torch.equal(saved.get_tensor(k), v) for k, v in base.state_dict().items())


def test_loading_restores_both_adapters_with_the_same_outputs(adapted, tmp_path):
    base, unet, folder = adapted
    loaded = load_component(folder, "unet", UNet2DConditionModel).eval()
    assert adapter_names(loaded) == list(ADAPTERS)
    outputs = {name: forward(unet, name) for name in ADAPTERS}
    assert not torch.equal(outputs["completion"], outputs["synthesis"])
    assert not torch.equal(outputs["completion"], forward(base))
    for name in ADAPTERS:  # same weights bit for bit, same inputs and kernels: the same floats
        assert torch.equal(forward(loaded, name), outputs[name])

    save_component(loaded, tmp_path / "unet")  # a loaded model saves the very same files again
    assert weights_hash(tmp_path) == weights_hash(folder)


def test_the_base_folder_loads_into_a_plain_unet(adapted):
    base, _, folder = adapted
    plain = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    assert adapter_names(plain) == []
    assert torch.equal(forward(plain), forward(base))


def test_a_missing_adapter_weights_file_is_named(adapted, tmp_path):
    _, _, folder = adapted
    broken = tmp_path / "model"
    save_component(load_component(folder, "unet", UNet2DConditionModel), broken / "unet")
    (broken / MODEL_INDEX).write_text((folder / MODEL_INDEX).read_text())
    missing = broken / "unet" / ADAPTERS_DIR / "synthesis" / ADAPTER_WEIGHTS
    missing.unlink()
    with pytest.raises(CheckpointError, match=f"{missing}: missing; the adapter 'synthesis' is incomplete"):
        load_component(broken, "unet", UNet2DConditionModel)
