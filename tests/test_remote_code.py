"""A saved checkpoint loads with trust_remote_code in a Python process that cannot import this package."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_pite import PiteConfig, PiteForConditionalGeneration

CHILD = textwrap.dedent(
    """
    import sys

    class BlockPackage:
        # the package is installed (editable) in this venv: make importing it fail loudly
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_pite", "processing"):
                raise ImportError(f"{name} imported in the trust_remote_code process")
            return None

    sys.meta_path.insert(0, BlockPackage())

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM

    checkpoint, inputs_file, outputs_file = sys.argv[1:]
    inputs = load_file(inputs_file)
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True).eval()
    multimodal = AutoModelForMultimodalLM.from_pretrained(checkpoint, trust_remote_code=True)
    auto = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert type(config).__name__ == "PiteConfig", type(config)
    assert type(model).__name__ == type(multimodal).__name__ == type(auto).__name__ == "PiteForConditionalGeneration"
    with torch.no_grad():
        outputs, auto_outputs = model(**inputs), auto(**inputs)
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert not [name for name in sys.modules if name.split(".")[0] in ("modeling_pite", "processing")]
    save_file({"logits": outputs.logits, "trajectories": outputs.trajectories.contiguous(),
               "auto_logits": auto_outputs.logits, "auto_trajectories": auto_outputs.trajectories.contiguous(),
               "generated": generated}, outputs_file)
    """
)


@pytest.mark.slow
def test_checkpoint_loads_with_trust_remote_code_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = PiteForConditionalGeneration(PiteConfig.from_preset("tiny", num_frames=4)).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    assert {"configuration_pite.py", "modeling_pite.py"} <= set(os.listdir(checkpoint))

    input_ids = torch.tensor([[1, 40, 41, 3, 3, 3, 3, 50, 51, 52]])
    inputs = {"input_ids": input_ids, "pixel_values_videos": torch.randn(1, 4, 3, 32, 32)}
    save_file(inputs, tmp_path / "inputs.safetensors")
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-I", "child.py", str(checkpoint), "inputs.safetensors", "outputs.safetensors"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    remote = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        local = model(**inputs)
    assert torch.equal(remote["logits"], local.logits)
    assert torch.equal(remote["trajectories"], local.trajectories)
    assert torch.equal(remote["auto_logits"], local.logits)  # AutoModel: the full model, heads included
    assert torch.equal(remote["auto_trajectories"], local.trajectories)
    assert torch.equal(remote["generated"], model.generate(**inputs, max_new_tokens=5, do_sample=False))
